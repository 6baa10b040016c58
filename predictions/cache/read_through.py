"""PredictionCache: fresh when possible, stale within grace, computed exactly once.

A stored prediction is fresh until its fresh_until, then stale for a grace period
(the store keeps it that long), then gone. A read finds one of three things:

- fresh: served as a HIT. Near the end of its freshness, XFetch may pick the read to
  revalidate the pair early, in the background, so that hot pairs never go stale;
- stale: served at once, marked STALE, and the pair is recomputed in the background
  (stale-while-revalidate); while that fails, the stale one keeps being served until
  its grace ends (stale-if-error);
- nothing: a MISS. In each process one request per pair reads through (SingleFlight)
  and the others wait for its outcome; across processes and hosts, the one that takes the
  pair's lock in Redis computes, and the others poll the store until the result lands,
  the lock's owner gives up, or their deadline passes. Every waiter gets the answer.

Everything that can fail is bounded: a process computes at most
``max_concurrent_computes`` predictions at once (background ones included), each
through ``offload`` (the API runs it on a real thread, off its event loop); a miss
queues for a computation slot within its deadline. At most ``max_waiting`` requests
per process wait on misses (a bound on memory and connections, not on a burst's
size); a Redis that keeps failing is skipped for a while (CircuitBreaker), and then the
last prediction this process saw is served, marked stale, within its grace. Past
``fresh_until + stale_grace_seconds`` nothing is ever served.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence

import redis

from predictions.cache import locks
from predictions.cache.circuit import CircuitBreaker
from predictions.cache.near_cache import NearCache, WriteFollower
from predictions.cache.revalidation import BackgroundRevalidator, revalidate_early
from predictions.cache.single_flight import FlightTimeout, SingleFlight
from predictions.cache.store import PredictionStore
from predictions.infra import metrics
from predictions.infra.clock import Clock
from predictions.model.contract import ModelLoadError
from predictions.model.prediction import Prediction
from predictions.model.predictor import Offload, PredictionFailed, Predictor, run_here
from predictions.settings import Settings

log = logging.getLogger(__name__)

# Redis is unreachable or frozen: what the circuit breaker counts.
REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)


class Outcome(enum.StrEnum):
    """What an answer to GET /predict/<pair> was: one vocabulary for the cache, the
    API's X-Cache header (``header``), its metrics and access log (the value), and the
    request-timing script."""

    HIT = "hit"  # a fresh prediction from the cache
    STALE = "stale"  # past its freshness, within its grace: served while recomputed
    MISS_COMPUTED = "miss_computed"  # nothing cached: this request ran the model
    MISS_WAITED = "miss_waited"  # nothing cached: it waited for another's computation
    MISS_FAILED = "miss_failed"  # no prediction could be served (503)
    REJECTED = "rejected"  # a malformed or unknown pair (400, 404)

    @property
    def header(self) -> str:
        """The X-Cache value: HIT, STALE or MISS (a MISS_FAILED or REJECTED answer
        carries no prediction, and no X-Cache)."""
        return _HEADERS[self]


_HEADERS = {
    Outcome.HIT: "HIT",
    Outcome.STALE: "STALE",
    Outcome.MISS_COMPUTED: "MISS",
    Outcome.MISS_WAITED: "MISS",
    Outcome.MISS_FAILED: "",
    Outcome.REJECTED: "",
}


class Unavailable(RuntimeError):
    """No prediction can be served now; the client should retry shortly."""

    error_code = "unavailable"


class CacheUnavailable(Unavailable):
    error_code = "cache_unavailable"


class ComputeTimeout(Unavailable):
    error_code = "compute_timeout"


class Overloaded(Unavailable):
    error_code = "overloaded"


class ComputeFailed(Unavailable):
    error_code = "prediction_failed"


@dataclasses.dataclass(frozen=True, slots=True)
class Lookup:
    prediction: Prediction
    outcome: Outcome  # HIT, STALE, MISS_COMPUTED or MISS_WAITED


@dataclasses.dataclass(frozen=True)
class Limits:
    """How long and how much a process may spend on misses (see Limits.from_settings)."""

    compute_timeout_seconds: float
    max_concurrent_computes: int
    # Requests of one process waiting on misses at once: below its connection bound,
    # so that some connections are always left for hits.
    max_waiting: int
    stale_grace_seconds: float
    early_revalidation_beta: float  # 0: no early revalidation
    failed_compute_backoff_seconds: float
    circuit_failure_threshold: int
    circuit_open_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits of one API process; ``Limits.from_settings(Settings())``: the defaults."""
        return cls(
            compute_timeout_seconds=settings.compute_timeout_seconds,
            max_concurrent_computes=settings.max_concurrent_computes,
            # A tenth of the connections are always left for hits, however many
            # requests wait on misses.
            max_waiting=max(1, settings.api_worker_connections * 9 // 10),
            stale_grace_seconds=settings.stale_grace_seconds,
            early_revalidation_beta=settings.early_revalidation_beta,
            failed_compute_backoff_seconds=settings.failed_compute_backoff_seconds,
            circuit_failure_threshold=settings.circuit_failure_threshold,
            circuit_open_seconds=settings.circuit_open_seconds,
        )


class PredictionCache:
    """Cache-aside over PredictionStore with a per-pair compute lock."""

    def __init__(
        self,
        store: PredictionStore,
        predictor: Predictor,
        limits: Limits,
        clock: Clock,
        near_cache: NearCache | None = None,
        breaker: CircuitBreaker | None = None,
        poll_interval_seconds: float = 0.02,
        draw: Callable[[], float] = random.random,
        offload: Offload[object] = run_here,
        feed: WriteFollower | None = None,
    ) -> None:
        self.store = store
        self.predictor = predictor
        # The model of each version this process may compute (a rollout changes it).
        self.catalog = predictor.models
        self.limits = limits
        self.near = near_cache or NearCache(0, clock)
        self.breaker = breaker or CircuitBreaker(
            limits.circuit_failure_threshold, limits.circuit_open_seconds, clock
        )
        self.poll_interval = poll_interval_seconds
        self.clock = clock
        self.draw = draw  # uniform in [0, 1), for XFetch
        self.offload = offload
        # Keeps near copies current by following every write (started on first use).
        self.feed = feed
        self._flights: SingleFlight[Lookup] = SingleFlight()
        self._computing = threading.BoundedSemaphore(self.limits.max_concurrent_computes)
        self._waiting = threading.BoundedSemaphore(self.limits.max_waiting)
        self.revalidator = BackgroundRevalidator(
            limits.max_concurrent_computes, limits.failed_compute_backoff_seconds, clock
        )

    def near_hit(self, pair: str) -> Prediction | None:
        """The pair's fresh near copy, if this process may serve one without asking
        Redis (the API's hot path); XFetch may pick it for early revalidation."""
        if self.feed is not None:
            self.feed.ensure_running()
        prediction = self.near.get(pair)  # only ever a fresh one
        if prediction is not None:
            self._consider_early_revalidation(prediction, self.clock.now())
        return prediction

    def get(self, pair: str) -> Lookup:
        """The pair's prediction: fresh if at all possible, else stale within grace."""
        prediction = self.near_hit(pair)
        if prediction is not None:
            return Lookup(prediction, Outcome.HIT)
        if not self.breaker.allow():
            return self._stale_or_raise(pair, CacheUnavailable("Redis is failing; not tried"))
        if not self._waiting.acquire(blocking=False):
            return self._stale_or_raise(
                pair, Overloaded(f"{pair}: too many requests are already waiting for predictions")
            )
        try:
            # One read-through per pair at a time in this process: a burst on a cold
            # pair makes one Redis read and one computation, and everyone gets it.
            wait = self.limits.compute_timeout_seconds + 1.0  # the leader's own bound, and some
            lookup, shared = self._flights.do(
                pair, functools.partial(self._read_through_once, pair), wait
            )
        except FlightTimeout as exc:
            return self._stale_or_raise(pair, ComputeTimeout(str(exc)))
        except REDIS_DOWN:
            return self._stale_or_raise(
                pair, CacheUnavailable("the prediction cache is unreachable")
            )
        except Unavailable as exc:
            return self._stale_or_raise(pair, exc)
        finally:
            self._waiting.release()
        if shared and lookup.outcome is Outcome.MISS_COMPUTED:  # it waited for another's
            return Lookup(lookup.prediction, Outcome.MISS_WAITED)
        return lookup

    def _read_through_once(self, pair: str) -> Lookup:
        """Read (and on a miss, compute) the pair, recording what Redis did."""
        try:
            lookup = self._read_through(pair)
        except REDIS_DOWN as exc:
            self._redis_failed(exc, pair)
            raise
        except BaseException:
            self.breaker.record_success()  # Redis answered; the miss path gave up
            raise
        self.breaker.record_success()
        self.near.put(lookup.prediction)
        return lookup

    def peek_many(self, pairs: list[str]) -> dict[str, Lookup | None]:
        """Each pair's cached prediction, in one Redis round trip; never computes here.

        A stale one is recomputed in the background, as for a single read. None for a
        pair with nothing to serve (absent, or Redis down and nothing known within grace).
        """
        found: dict[str, Lookup | None] = {}
        wanted = []
        now = self.clock.now()
        for pair in pairs:
            prediction = self.near.get(pair)
            if prediction is not None:
                self._consider_early_revalidation(prediction, now)
                found[pair] = Lookup(prediction, Outcome.HIT)
            else:
                wanted.append(pair)
        if not wanted:
            return found
        try:
            if not self.breaker.allow():
                raise CacheUnavailable("Redis is failing; not tried")
            try:
                read = self.store.read_many(wanted)
            except REDIS_DOWN as exc:
                self._redis_failed(exc, ",".join(wanted)[:80])
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
        self.near.observe(read.version, read.flip_pending)
        now = self.clock.now()
        for pair, prediction in read.predictions.items():
            found[pair] = None if prediction is None else self._classify(prediction, now)
            if prediction is not None:
                self.near.put(prediction)
        return found

    def warm(self, pairs: Sequence[str], chunk: int = 1000) -> int:
        """Copy the pairs' stored predictions into the near cache, a chunk per round
        trip, as the write feed delivers them (served while the feed is followed); so a
        process that just started answers its first requests from memory. Returns how
        many were copied. It only fills room: a copy the process's requests made (they
        may come first) is never evicted for one of these."""
        copied = 0
        # No further than the near cache holds: more would only evict the first ones.
        wanted = pairs[: self.near.max_pairs]
        for first in range(0, len(wanted), chunk):
            read = self.store.read_many(wanted[first : first + chunk])
            for prediction in read.predictions.values():
                if prediction is not None and self.near.fill(prediction):
                    copied += 1
        return copied

    def _classify(self, prediction: Prediction, now: float) -> Lookup:
        """HIT or STALE for a stored prediction, revalidating it in the background if due."""
        if prediction.is_fresh(now):
            self._consider_early_revalidation(prediction, now)
            return Lookup(prediction, Outcome.HIT)
        self._revalidate(prediction, "stale")
        return Lookup(prediction, Outcome.STALE)

    def _read_through(self, pair: str) -> Lookup:
        read = self.store.read(pair)
        self.near.observe(read.version, read.flip_pending)
        prediction = read.predictions[pair]
        if prediction is not None:
            return self._classify(prediction, self.clock.now())
        version = read.version
        if version is None:
            # A fresh cache has no active version yet: this process's model becomes it.
            version = self.catalog.activate_default_if_none(self.store.redis)
            self.near.observe(version, read.flip_pending)
        if self.revalidator.resting(pair):
            # It failed moments ago: answer at once rather than run the model again.
            raise ComputeFailed(f"{pair}: the model failed moments ago; retry shortly")
        return self._compute_once(pair, version)

    def _compute_once(self, pair: str, version: str) -> Lookup:
        client = self.store.redis
        timeout = self.limits.compute_timeout_seconds
        started = self.clock.monotonic()
        deadline = started + timeout
        waited = False
        while True:
            # The lock outlives a computation that hangs by at most the timeout.
            token = locks.acquire(client, pair, version, timeout, self.clock.now())
            if token is not None:
                try:
                    # Someone may have stored it between our read and our lock.
                    stored = self.store.read_version(pair, version)
                    if stored is not None and stored.is_fresh(self.clock.now()):
                        return Lookup(stored, Outcome.MISS_WAITED)
                    computed = self._compute_and_store(pair, version, deadline)
                    return Lookup(computed, Outcome.MISS_COMPUTED)
                finally:
                    _release(client, pair, version, token)
            if not waited:
                waited = True
                metrics.LOCK_WAITS.inc()
            time.sleep(self.poll_interval)
            prediction = self.store.read_version(pair, version)
            if prediction is not None:
                metrics.LOCK_WAIT_SECONDS.observe(self.clock.monotonic() - started)
                return Lookup(prediction, Outcome.MISS_WAITED)
            if self.clock.monotonic() >= deadline:
                metrics.LOCK_WAIT_SECONDS.observe(self.clock.monotonic() - started)
                raise ComputeTimeout(f"{pair}: no prediction within {timeout:g} s")

    def _compute_and_store(self, pair: str, version: str, deadline: float | None) -> Prediction:
        """Compute now (within ``deadline``, a monotonic time, waiting for a free slot),
        or, with no deadline, only if a slot is free at once."""
        if deadline is None:
            slot = self._computing.acquire(blocking=False)
        else:
            slot = self._computing.acquire(timeout=max(0.0, deadline - self.clock.monotonic()))
        if not slot:
            raise Overloaded(f"{pair}: this process is computing as many predictions as it may")
        try:
            try:
                model = self.catalog.model(self.store.redis, version)
                prediction = self.predictor.compute(pair, model, self.offload)
            except ModelLoadError as exc:
                log.error("cannot build model version=%s error=%s", version, exc)
                self.revalidator.failed(pair)
                raise ComputeFailed(str(exc)) from exc
            except PredictionFailed as exc:
                self.revalidator.failed(pair)
                raise ComputeFailed(str(exc)) from exc
        finally:
            self._computing.release()
        self.revalidator.succeeded(pair)
        try:
            self.store.write(prediction, self.clock.now())
        except REDIS_DOWN as exc:
            # The answer is good; only caching it failed. Serve it rather than waste it.
            metrics.REDIS_ERRORS.inc()
            log.warning("could not store prediction pair=%s error=%r", pair, exc)
        return prediction

    def _consider_early_revalidation(self, prediction: Prediction, now: float) -> None:
        beta = self.limits.early_revalidation_beta
        # 1 - random() is in (0, 1]: log(0) can never come up.
        if beta and revalidate_early(
            prediction.fresh_until - now, prediction.compute_seconds, beta, 1.0 - self.draw()
        ):
            self._revalidate(prediction, "early")

    def _revalidate(self, seen: Prediction, reason: str) -> None:
        """Recompute seen.pair in the background, unless already under way here."""
        self.revalidator.submit(
            seen.pair, functools.partial(self._revalidate_in_background, seen=seen, reason=reason)
        )

    def _revalidate_in_background(self, pair: str, seen: Prediction, reason: str) -> None:
        result = "skipped"
        try:
            client = self.store.redis
            version = seen.model_version
            # The miss path's lock: one computation across every process and host.
            token = locks.acquire(
                client, pair, version, self.limits.compute_timeout_seconds, self.clock.now()
            )
            if token is None:
                return  # someone is computing it now
            try:
                current = self.store.read_version(pair, version)
                if current is not None and current.computed_at > seen.computed_at:
                    return  # recomputed since this request looked
                prediction = self._compute_and_store(pair, version, None)
            finally:
                _release(client, pair, version, token)
            # Even if Redis would not take it, this process serves it (fresh).
            self.near.put(prediction)
            result = "ok"
        except Overloaded:
            pass  # the next stale read asks again
        except ComputeFailed:
            result = "failed"  # logged by the predictor; the pair now rests
        except REDIS_DOWN as exc:
            result = "failed"
            self._redis_failed(exc, pair)
        finally:
            metrics.REVALIDATIONS.labels(reason, result).inc()
            log.info(
                "background revalidation pair=%s reason=%s result=%s",
                pair,
                reason,
                result,
                extra={"pair": pair, "reason": reason, "result": result},
            )

    def _redis_failed(self, exc: BaseException, pair: str) -> None:
        self.breaker.record_failure()
        metrics.REDIS_ERRORS.inc()
        log.warning("redis unavailable pair=%s error=%r", pair, exc)

    def _stale_or_raise(self, pair: str, error: Unavailable) -> Lookup:
        """The last prediction seen, if within its grace period; never one past it."""
        prediction = self.near.last_known(pair)
        if prediction is not None:
            if self.clock.now() < prediction.fresh_until + self.limits.stale_grace_seconds:
                # It may even be fresh (only the near copy's age ran out): it is still
                # marked stale, as it could not be checked against Redis.
                log.info("serving stale pair=%s reason=%s", pair, error.error_code)
                return Lookup(prediction, Outcome.STALE)
        raise error


def _release(client: redis.Redis, pair: str, version: str, token: bytes) -> None:
    try:
        locks.release(client, pair, version, token)
    except redis.RedisError:
        # Redis went away: the lock expires on its own, and the caller already has
        # its prediction.
        pass
