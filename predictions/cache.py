"""PredictionCache: read through the store, computing a missing pair exactly once.

However many requests miss the same pair at the same moment (threads, gunicorn
workers, hosts), one takes the pair's lock in Redis and computes; the others poll the
store until the result lands, the lock's owner gives up, or their deadline passes.

Everything that can fail is bounded: a process computes at most
``max_concurrent_computes`` predictions at once and lets at most ``max_waiting`` requests
wait on misses, so that hits on other pairs always find a free thread; a Redis that
keeps failing is skipped for a while (CircuitBreaker). When no fresh prediction can be
had, the last one this process saw is served, marked stale, if it expired less than
``stale_grace_seconds`` ago; otherwise the caller gets an Unavailable error.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import threading
import time
from collections.abc import Callable

import redis

from predictions import locks
from predictions.circuit import CircuitBreaker
from predictions.near_cache import NearCache
from predictions.prediction import Prediction
from predictions.predictor import PredictionFailed, Predictor
from predictions.store import PredictionStore

log = logging.getLogger(__name__)

# Redis is unreachable or frozen: what the circuit breaker counts.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


class Outcome(enum.StrEnum):
    HIT = "HIT"  # a fresh prediction from the cache
    MISS = "MISS"  # computed for this request, or waited for a running computation
    STALE = "STALE"  # past its freshness, served because no fresh one could be had


class Unavailable(RuntimeError):
    """No prediction can be served now; the client should retry shortly."""

    code = "unavailable"


class CacheUnavailable(Unavailable):
    code = "cache_unavailable"


class ComputeTimeout(Unavailable):
    code = "compute_timeout"


class Overloaded(Unavailable):
    code = "overloaded"


class ComputeFailed(Unavailable):
    code = "prediction_failed"


@dataclasses.dataclass(frozen=True, slots=True)
class Lookup:
    prediction: Prediction
    outcome: Outcome


@dataclasses.dataclass(frozen=True)
class Limits:
    """How long and how much a process may spend on misses."""

    compute_timeout_seconds: float = 10.0
    max_concurrent_computes: int = 2
    max_waiting: int = 4
    stale_grace_seconds: float = 60.0


class PredictionCache:
    """Cache-aside over PredictionStore with a per-pair compute lock."""

    def __init__(
        self,
        store: PredictionStore,
        predictor: Predictor,
        limits: Limits | None = None,
        near_cache: NearCache | None = None,
        breaker: CircuitBreaker | None = None,
        poll_interval_seconds: float = 0.02,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.predictor = predictor
        self.limits = limits or Limits()
        self.near = near_cache or NearCache(0)
        self.breaker = breaker or CircuitBreaker(threshold=3, open_seconds=1.0)
        self.poll_interval = poll_interval_seconds
        self.clock = clock
        self._computing = threading.BoundedSemaphore(self.limits.max_concurrent_computes)
        self._waiting = threading.BoundedSemaphore(self.limits.max_waiting)

    def get(self, pair: str) -> Lookup:
        """The pair's prediction: fresh if at all possible, else stale within grace."""
        prediction = self.near.get(pair)
        if prediction is not None:
            return Lookup(prediction, Outcome.HIT)
        if not self.breaker.allow():
            return self._stale_or_raise(pair, CacheUnavailable("Redis is failing; not tried"))
        try:
            lookup = self._read_through(pair)
        except REDIS_DOWN as exc:
            self.breaker.record_failure()
            log.warning("redis unavailable pair=%s error=%r", pair, exc)
            return self._stale_or_raise(
                pair, CacheUnavailable("the prediction cache is unreachable")
            )
        except Unavailable as exc:
            self.breaker.record_success()  # Redis answered; the miss path gave up
            return self._stale_or_raise(pair, exc)
        except BaseException:
            self.breaker.record_success()
            raise
        self.breaker.record_success()
        self.near.put(lookup.prediction)
        return lookup

    def peek_many(self, pairs: list[str]) -> dict[str, Lookup | None]:
        """Each pair's cached prediction, in one Redis round trip; never computes.

        None for a pair with no prediction to serve (absent, or Redis down and nothing
        known within grace).
        """
        found: dict[str, Lookup | None] = {}
        wanted = []
        for pair in pairs:
            prediction = self.near.get(pair)
            if prediction is not None:
                found[pair] = Lookup(prediction, Outcome.HIT)
            else:
                wanted.append(pair)
        if not wanted:
            return found
        try:
            if not self.breaker.allow():
                raise CacheUnavailable("Redis is failing; not tried")
            try:
                stored = self.store.read_many(wanted)
            except REDIS_DOWN:
                self.breaker.record_failure()
                raise
            self.breaker.record_success()
        except (CacheUnavailable, *REDIS_DOWN) as exc:
            error = exc if isinstance(exc, Unavailable) else CacheUnavailable(str(exc))
            for pair in wanted:
                try:
                    found[pair] = self._stale_or_raise(pair, error)
                except Unavailable:
                    found[pair] = None
            return found
        for pair, prediction in stored.items():
            if prediction is not None:
                self.near.put(prediction)
            found[pair] = None if prediction is None else Lookup(prediction, Outcome.HIT)
        return found

    def _read_through(self, pair: str) -> Lookup:
        prediction = self.store.read(pair)
        if prediction is not None:
            return Lookup(prediction, Outcome.HIT)
        if not self._waiting.acquire(blocking=False):
            raise Overloaded(f"{pair}: too many requests are already waiting for predictions")
        try:
            return Lookup(self._compute_once(pair), Outcome.MISS)
        finally:
            self._waiting.release()

    def _compute_once(self, pair: str) -> Prediction:
        client = self.store.redis
        timeout = self.limits.compute_timeout_seconds
        deadline = time.monotonic() + timeout
        while True:
            # The lock outlives a computation that hangs by at most the timeout.
            token = locks.acquire(client, pair, timeout)
            if token is not None:
                try:
                    # Someone may have stored it between our read and our lock.
                    return self.store.read(pair) or self._compute_and_store(pair)
                finally:
                    _release(client, pair, token)
            time.sleep(self.poll_interval)
            prediction = self.store.read(pair)
            if prediction is not None:
                return prediction
            if time.monotonic() >= deadline:
                raise ComputeTimeout(f"{pair}: no prediction within {timeout:g} s")

    def _compute_and_store(self, pair: str) -> Prediction:
        if not self._computing.acquire(blocking=False):
            raise Overloaded(f"{pair}: this process is computing as many predictions as it may")
        try:
            try:
                prediction = self.predictor.compute(pair)
            except PredictionFailed as exc:
                raise ComputeFailed(str(exc)) from exc
        finally:
            self._computing.release()
        try:
            self.store.write(prediction, self.clock())
        except REDIS_DOWN as exc:
            # The answer is good; only caching it failed. Serve it rather than waste it.
            log.warning("could not store prediction pair=%s error=%r", pair, exc)
        return prediction

    def _stale_or_raise(self, pair: str, error: Unavailable) -> Lookup:
        """The last prediction seen, if within its grace period; never one past it."""
        prediction = self.near.last_known(pair)
        if prediction is not None:
            expired_for = self.clock() - prediction.expires_at
            if expired_for < self.limits.stale_grace_seconds:
                # It may even be unexpired (only the near copy's age ran out): it is
                # still marked stale, as it could not be checked against Redis.
                log.info("serving stale pair=%s reason=%s", pair, error.code)
                return Lookup(prediction, Outcome.STALE)
        raise error


def _release(client: redis.Redis, pair: str, token: bytes) -> None:
    try:
        locks.release(client, pair, token)
    except redis.RedisError:
        # Redis went away: the lock expires on its own, and the caller already has
        # its prediction.
        pass
