"""NearCache: a per-process copy of the predictions this process last saw.

Under load the same few pairs are read thousands of times a second; each read from
Redis is a network round trip. Serving repeats from process memory for at most
``max_age_seconds`` (and never past the prediction's own fresh_until) makes a hit cost a
dict lookup, at the price of answering with a prediction up to max_age older than the
newest one in Redis.

The copy is also the last-known-good prediction: when Redis or the model fails, the
caller may serve it, marked stale, within its grace period. Only configured pairs ever
reach it, so it is bounded.

Rollouts: a copy is served only if it was made by the active model version as the
process last saw it in Redis, and never while a flip is pending. A rollout marks the
flip pending, waits longer than max_age, then flips: by then no process holds a copy
it may serve, so every answer after the flip comes from Redis, by the new version.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from predictions.prediction import Prediction


class NearCache:
    def __init__(
        self,
        max_age_seconds: float,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_age = max_age_seconds
        self.clock = clock
        self.monotonic = monotonic
        # pair -> (prediction, monotonic deadline); dict operations are atomic under the
        # GIL, so gunicorn's threads share it without a lock.
        self._entries: dict[str, tuple[Prediction, float]] = {}
        # What the last read from Redis said: the active version, a pending flip.
        self.active_version: str | None = None
        self.flip_pending = False

    def observe(self, version: str | None, flip_pending: bool) -> None:
        """Record what a read from Redis said about the active model version."""
        self.active_version = version
        self.flip_pending = flip_pending

    def get(self, pair: str) -> Prediction | None:
        """The pair's prediction if it was read less than max_age ago, is fresh, and is
        by the active version with no flip pending."""
        entry = self._entries.get(pair)
        if entry is None or self.flip_pending:
            return None
        prediction, deadline = entry
        if (
            self.monotonic() < deadline
            and self.clock() < prediction.fresh_until
            and prediction.model_version == self.active_version
        ):
            return prediction
        return None

    def last_known(self, pair: str) -> Prediction | None:
        """The newest prediction this process saw for the pair, however old."""
        entry = self._entries.get(pair)
        return entry[0] if entry else None

    def put(self, prediction: Prediction) -> None:
        current = self._entries.get(prediction.pair)
        if (
            current is not None
            and current[0].model_version == prediction.model_version
            and current[0].computed_at > prediction.computed_at
        ):
            # Never replace a newer copy with an older one (a slow reader racing a
            # refresh); but do restart the clock: Redis was just read.
            prediction = current[0]
        self._entries[prediction.pair] = (prediction, self.monotonic() + self.max_age)
