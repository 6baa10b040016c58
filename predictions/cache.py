"""PredictionCache: read through the store, computing a missing pair exactly once.

However many requests miss the same pair at the same moment (threads, gunicorn
workers, hosts), one takes the pair's lock in Redis and computes; the others poll the
store until the result lands, the lock's owner gives up, or their deadline passes.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Callable

import redis
from redis.exceptions import LockError

from predictions.keys import compute_lock_key
from predictions.near_cache import NearCache
from predictions.prediction import Prediction
from predictions.predictor import Predictor
from predictions.store import PredictionStore


class Outcome(enum.StrEnum):
    HIT = "HIT"  # served from Redis
    MISS = "MISS"  # computed for this request, or waited for a running computation


class ComputeTimeout(RuntimeError):
    """Nobody produced the pair's prediction within the compute timeout."""


@dataclasses.dataclass(frozen=True, slots=True)
class Lookup:
    prediction: Prediction
    outcome: Outcome


class PredictionCache:
    """Cache-aside over PredictionStore with a per-pair compute lock."""

    def __init__(
        self,
        store: PredictionStore,
        predictor: Predictor,
        compute_timeout_seconds: float,
        near_cache: NearCache | None = None,
        poll_interval_seconds: float = 0.02,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.predictor = predictor
        self.near = near_cache or NearCache(0)
        self.compute_timeout = compute_timeout_seconds
        self.poll_interval = poll_interval_seconds
        self.clock = clock

    def get(self, pair: str) -> Lookup:
        """The pair's prediction: from Redis if there, else computed once and stored."""
        prediction = self.near.get(pair)
        if prediction is not None:
            return Lookup(prediction, Outcome.HIT)
        prediction = self.store.read(pair)
        if prediction is not None:
            self.near.put(prediction)
            return Lookup(prediction, Outcome.HIT)
        prediction = self._compute_once(pair)
        self.near.put(prediction)
        return Lookup(prediction, Outcome.MISS)

    def _compute_once(self, pair: str) -> Prediction:
        lock = self.store.redis.lock(
            compute_lock_key(pair),
            # The lock outlives a computation that hangs by at most this long.
            timeout=self.compute_timeout,
            thread_local=False,
        )
        deadline = time.monotonic() + self.compute_timeout
        while True:
            if lock.acquire(blocking=False):
                try:
                    # Someone may have stored it between our read and our lock.
                    prediction = self.store.read(pair)
                    if prediction is None:
                        prediction = self.predictor.compute(pair)
                        self.store.write(prediction, self.clock())
                    return prediction
                finally:
                    _release(lock)
            time.sleep(self.poll_interval)
            prediction = self.store.read(pair)
            if prediction is not None:
                return prediction
            if time.monotonic() >= deadline:
                raise ComputeTimeout(f"{pair}: no prediction within {self.compute_timeout:g} s")


def _release(lock: redis.lock.Lock) -> None:
    try:
        lock.release()
    except (LockError, redis.RedisError):
        # The lock expired while we computed (it may be someone else's now), or Redis
        # went away: either way it expires on its own, and the caller already has
        # its prediction.
        pass
