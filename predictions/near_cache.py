"""NearCache: a per-process copy of the predictions this process last saw.

Under load the same few pairs are read thousands of times a second; each read from
Redis is a network round trip. Serving repeats from process memory for at most
``max_age_seconds`` (and never past the prediction's own fresh_until) makes a hit cost a
dict lookup, at the price of answering with a prediction up to max_age older than the
newest one in Redis.

The copy is also the last-known-good prediction: when Redis or the model fails, the
caller may serve it, marked stale, within its grace period. Only configured pairs ever
reach it, so it is bounded (by PAIRS).

Rollouts: a copy is served only if it was made by the active model version as the
process last saw it in Redis, and never while a flip is pending. A rollout marks the
flip pending, waits longer than max_age, then flips: by then no process holds a copy
it may serve, so every answer after the flip comes from Redis, by the new version.

Following writes (predictions/write_feed.py): a process that subscribes to every write
keeps its copies current, and learns of a pending flip from the same ordered stream.
Each time the stream is confirmed up to date (a PING answered on the subscription, so
every message published before it has been applied), the copies made in that
subscription are as good as just read: they are served, while fresh and of the
followed active version, as long as the stream was confirmed less than max_age ago.
The rollout's wait covers them exactly as it covers a copy read from Redis.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from predictions.prediction import Prediction

_NEVER = float("-inf")


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
        # pair -> (prediction, monotonic deadline, epoch it was put in); dict operations
        # are atomic under the GIL, so threads and greenlets share it without a lock.
        self._entries: dict[str, tuple[Prediction, float, int]] = {}
        # What the last read from Redis said: the active version, a pending flip.
        self.active_version: str | None = None
        self.flip_pending = False
        # What the write stream says (only the stream sets these; see the docstring).
        self._epoch = 0  # a new subscription, a new epoch: older copies are not followed
        self._following = False
        self._followed_version: str | None = None
        self._followed_pending = True
        self._confirmed_at = _NEVER  # monotonic time the stream was last up to date

    def observe(self, version: str | None, flip_pending: bool) -> None:
        """Record what a read from Redis said about the active model version."""
        self.active_version = version
        self.flip_pending = flip_pending

    def get(self, pair: str) -> Prediction | None:
        """The pair's prediction if this process may serve it without asking Redis:
        fresh, by the active version with no flip pending, and either read less than
        max_age ago or kept current by a confirmed write stream."""
        entry = self._entries.get(pair)
        if entry is None:
            return None
        prediction, deadline, epoch = entry
        if self.clock() >= prediction.fresh_until:
            return None
        now = self.monotonic()
        if (
            now < deadline
            and not self.flip_pending
            and prediction.model_version == self.active_version
        ):
            return prediction
        if (
            epoch == self._epoch
            and self._following
            and now - self._confirmed_at < self.max_age
            and not self._followed_pending
            and prediction.model_version == self._followed_version
        ):
            return prediction
        return None

    def last_known(self, pair: str) -> Prediction | None:
        """The newest prediction this process saw for the pair, however old."""
        entry = self._entries.get(pair)
        return entry[0] if entry else None

    def put(self, prediction: Prediction, read: bool = True) -> None:
        """Keep a prediction this process read (or computed); ``read=False`` for one the
        write stream delivered, which does not restart the copy's max_age."""
        current = self._entries.get(prediction.pair)
        deadline = self.monotonic() + self.max_age if read else _NEVER
        if current is not None and current[0].model_version == prediction.model_version:
            if current[0].computed_at > prediction.computed_at:
                # Never replace a newer copy with an older one (a slow reader racing a
                # refresh); but do restart the clock: Redis was just read.
                prediction = current[0]
            if not read:
                deadline = current[1]
        self._entries[prediction.pair] = (prediction, deadline, self._epoch)

    def forget(self, pair: str) -> None:
        self._entries.pop(pair, None)

    # The write stream's side (predictions/write_feed.py).

    @property
    def following(self) -> bool:
        return self._following

    def follow(self, version: str | None, flip_pending: bool) -> None:
        """A new subscription is up: start a new epoch from the state read after it."""
        self._epoch += 1
        self._confirmed_at = _NEVER
        self._followed_version = version
        self._followed_pending = flip_pending
        self._following = True

    def followed_state(self, version: str | None, flip_pending: bool) -> None:
        """The stream (or a check that no message overtook) says the state is this."""
        self._followed_version = version
        self._followed_pending = flip_pending

    def written(self, prediction: Prediction) -> None:
        """The stream delivered a write: update the copy, if this process holds one."""
        if prediction.pair in self._entries:
            self.put(prediction, read=False)

    def confirmed(self, at: float) -> None:
        """Every message published before monotonic time ``at`` has been applied."""
        self._confirmed_at = at

    def unfollow(self) -> None:
        """The subscription is lost: copies live by their own max_age again."""
        self._following = False
        self._confirmed_at = _NEVER
