"""PredictionStore: the one place that reads and writes predictions in Redis."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence

import redis

from predictions.keys import prediction_key
from predictions.prediction import InvalidPrediction, Prediction

log = logging.getLogger(__name__)


class PredictionStore:
    """Predictions in Redis, one string key per pair, each with its own expiry.

    A prediction is kept ``grace_seconds`` past its freshness (fresh_until), so that it
    can be served, marked stale, while a new one is computed. Contract: a read may find
    nothing (never computed, past its grace, or an entry that is not a valid prediction
    for that pair) and returns None; a prediction it returns may be fresh or stale, and
    the caller tells which (Prediction.is_fresh). A write sets the value and its
    absolute expiry in one command, so no key can outlive its grace. Redis errors are
    not caught here: the caller knows what to answer.
    """

    def __init__(
        self,
        client: redis.Redis,
        grace_seconds: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = client
        self.grace_seconds = grace_seconds
        self.clock = clock

    def read(self, pair: str) -> Prediction | None:
        """The pair's prediction, fresh or within its grace, or None."""
        try:
            raw = self.redis.get(prediction_key(pair))
        except redis.ResponseError as exc:
            # WRONGTYPE: something else owns the key; the next write replaces it.
            log.warning("unreadable prediction entry pair=%s error=%s", pair, exc)
            return None
        return self._decode(pair, raw)

    def read_many(self, pairs: Sequence[str]) -> dict[str, Prediction | None]:
        """Several pairs in one round trip (MGET returns None for a wrong type)."""
        if not pairs:
            return {}
        values = self.redis.mget([prediction_key(pair) for pair in pairs])
        return {pair: self._decode(pair, raw) for pair, raw in zip(pairs, values, strict=True)}

    def write(self, prediction: Prediction, now: float) -> bool:
        """Store a prediction until its grace ends; False if that had already passed."""
        return self.write_many([prediction], now) == 1

    def write_many(self, predictions: Iterable[Prediction], now: float) -> int:
        """Store predictions in one round trip; return how many were written."""
        pipe = self.redis.pipeline(transaction=False)
        written = 0
        for prediction in predictions:
            keep_until = self.keep_until(prediction)
            if keep_until <= now:
                log.warning("not storing a prediction past its grace pair=%s", prediction.pair)
                continue
            # An absolute expiry: a write that a frozen Redis receives late (or twice,
            # through a retry) cannot outlive the prediction's grace.
            pipe.set(
                prediction_key(prediction.pair), prediction.to_json(), pxat=int(keep_until * 1000)
            )
            written += 1
        if written:
            pipe.execute()
        return written

    def keep_until(self, prediction: Prediction) -> float:
        """When the prediction may no longer be served at all, even marked stale."""
        return prediction.fresh_until + self.grace_seconds

    def _decode(self, pair: str, raw: object) -> Prediction | None:
        if raw is None:
            return None
        if not isinstance(raw, bytes):  # a client made with decode_responses=True
            raw = str(raw).encode()
        try:
            prediction = Prediction.from_json(raw, pair)
        except InvalidPrediction as exc:
            log.warning("invalid prediction entry pair=%s error=%s", pair, exc)
            return None
        # Redis expires it by its own clock; ours decides what we serve.
        return prediction if self.clock() < self.keep_until(prediction) else None
