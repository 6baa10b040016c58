from __future__ import annotations

import dataclasses
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import fakeredis
import pytest
import redis

from predictions.cache import (
    CacheUnavailable,
    ComputeFailed,
    ComputeTimeout,
    Limits,
    Outcome,
    Overloaded,
    PredictionCache,
)
from predictions.cache.circuit import CircuitBreaker
from predictions.cache.near_cache import NearCache
from predictions.cache.store import PredictionStore
from predictions.infra.keys import active_version_key, compute_lock_key, prediction_key
from predictions.model.market_data import SyntheticMarketData
from predictions.model.predictor import Predictor
from predictions.settings import Settings
from tests.harness.doubles import CountingModel, FailingModel, HostClock, ManualClock

CLOCK = HostClock()


def _cache(
    store: PredictionStore, predictor: Predictor, near: float = 0, **limits: float
) -> PredictionCache:
    return PredictionCache(
        store,
        predictor,
        _limits(**{"compute_timeout_seconds": 5, "max_waiting": 50, **limits}),
        CLOCK,
        near_cache=NearCache(near, CLOCK),
        poll_interval_seconds=0.005,
    )


def _limits(**overrides: Any) -> Limits:
    """The default settings' limits, with some changed."""
    return dataclasses.replace(Limits.from_settings(Settings()), **overrides)


def _slow(model: CountingModel, seconds: float) -> threading.Event:
    """Make the model take a while, so that concurrent requests overlap."""
    started = threading.Event()
    original = model.predict

    def slow_predict(*args: object, **kwargs: object) -> float:
        started.set()
        time.sleep(seconds)
        return original(*args, **kwargs)  # type: ignore[arg-type]

    model.predict = slow_predict  # type: ignore[method-assign]
    return started


class DeadRedisStore(PredictionStore):
    """A store whose Redis refuses every connection, counting the attempts."""

    def __init__(self) -> None:
        super().__init__(fakeredis.FakeRedis(), CLOCK)
        self.attempts = 0

    def read(self, pair: str):  # type: ignore[no-untyped-def]
        self.attempts += 1
        raise redis.ConnectionError("refused")


def test_a_miss_computes_and_stores_then_hits(
    store: PredictionStore, predictor: Predictor, model: CountingModel
) -> None:
    cache = _cache(store, predictor)
    first = cache.get("ETH-EUR")
    second = cache.get("ETH-EUR")
    assert (first.outcome, second.outcome) == (Outcome.MISS_COMPUTED, Outcome.HIT)
    assert first.prediction == second.prediction
    assert model.calls == ["ETH-EUR"]


def test_concurrent_misses_compute_once(
    store: PredictionStore, predictor: Predictor, model: CountingModel
) -> None:
    started = _slow(model, 0.2)
    cache = _cache(store, predictor)
    with ThreadPoolExecutor(max_workers=20) as pool:
        lookups = list(pool.map(lambda _: cache.get("BTC-EUR"), range(20)))
    assert model.calls == ["BTC-EUR"]
    assert len({lookup.prediction for lookup in lookups}) == 1
    assert started.is_set()


def test_a_waiter_gives_up_at_the_deadline(
    store: PredictionStore, predictor: Predictor, redis_client: fakeredis.FakeRedis
) -> None:
    # Someone else holds the lock and never delivers.
    redis_client.set(compute_lock_key("ETH-EUR", "counting-1"), "other-token", px=60_000)
    with pytest.raises(ComputeTimeout):
        _cache(store, predictor, compute_timeout_seconds=0.1).get("ETH-EUR")


def test_a_dead_owner_lock_expires_and_a_waiter_computes(
    store: PredictionStore,
    predictor: Predictor,
    redis_client: fakeredis.FakeRedis,
    model: CountingModel,
) -> None:
    redis_client.set(compute_lock_key("ETH-EUR", "counting-1"), "crashed-owner", px=100)
    lookup = _cache(store, predictor, compute_timeout_seconds=2).get("ETH-EUR")
    assert lookup.outcome is Outcome.MISS_COMPUTED
    assert model.calls == ["ETH-EUR"]


def test_a_failed_computation_releases_the_lock_and_writes_nothing(
    store: PredictionStore, redis_client: fakeredis.FakeRedis
) -> None:
    predictor = Predictor(
        FailingModel(), SyntheticMarketData(), horizon_seconds=300, ttl_seconds=30, clock=CLOCK
    )
    with pytest.raises(ComputeFailed):
        _cache(store, predictor).get("ETH-EUR")
    assert redis_client.keys(prediction_key("*", "*")) == []


def test_computations_beyond_the_bound_queue_for_a_slot(
    store: PredictionStore, predictor: Predictor, model: CountingModel
) -> None:
    _slow(model, 0.3)
    cache = _cache(store, predictor, max_concurrent_computes=2)
    running = [0]
    most = [0]
    compute = predictor.compute

    def counting_compute(*args: object, **kwargs: object) -> object:
        running[0] += 1
        most[0] = max(most[0], running[0])
        try:
            return compute(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            running[0] -= 1

    predictor.compute = counting_compute  # type: ignore[assignment, method-assign]
    pairs = ["ETH-EUR", "BTC-EUR", "ETH-USD", "BTC-USD"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        lookups = list(pool.map(cache.get, pairs))
    assert [lookup.outcome for lookup in lookups] == [Outcome.MISS_COMPUTED] * 4
    assert sorted(model.calls) == sorted(pairs)
    assert most[0] == 2


def test_a_miss_that_finds_no_slot_within_its_deadline_is_overloaded(
    store: PredictionStore, predictor: Predictor, model: CountingModel
) -> None:
    _slow(model, 1.0)
    cache = _cache(store, predictor, max_concurrent_computes=1, compute_timeout_seconds=0.3)

    def outcome(pair: str) -> str:
        try:
            return cache.get(pair).outcome.header
        except Overloaded:
            return "overloaded"

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(outcome, ["ETH-EUR", "BTC-EUR"]))
    assert sorted(outcomes) == ["MISS", "overloaded"]
    assert len(model.calls) == 1


def test_a_burst_on_one_cold_pair_is_answered_by_one_computation(
    store: PredictionStore, predictor: Predictor, model: CountingModel
) -> None:
    _slow(model, 0.3)
    cache = _cache(store, predictor)
    with ThreadPoolExecutor(max_workers=40) as pool:
        lookups = list(pool.map(lambda _: cache.get("ETH-EUR"), range(40)))
    assert model.calls == ["ETH-EUR"]
    assert {lookup.outcome.header for lookup in lookups} == {"MISS"}
    assert sum(lookup.outcome is Outcome.MISS_COMPUTED for lookup in lookups) == 1
    assert len({lookup.prediction for lookup in lookups}) == 1


def test_waiting_requests_are_bounded_too(
    store: PredictionStore, predictor: Predictor, model: CountingModel
) -> None:
    _slow(model, 0.3)
    cache = _cache(store, predictor, max_waiting=3)

    def outcome(_: int) -> str:
        try:
            return cache.get("ETH-EUR").outcome.header
        except Overloaded:
            return "overloaded"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = list(pool.map(outcome, range(8)))
    assert outcomes.count("MISS") == 3
    assert outcomes.count("overloaded") == 5
    assert model.calls == ["ETH-EUR"]


def test_near_cache_serves_repeats_without_redis(
    store: PredictionStore, predictor: Predictor, redis_client: fakeredis.FakeRedis
) -> None:
    cache = _cache(store, predictor, near=60)
    first = cache.get("ETH-EUR")
    redis_client.flushall()
    again = cache.get("ETH-EUR")
    assert again.outcome is Outcome.HIT
    assert again.prediction == first.prediction


def test_without_near_cache_every_read_goes_to_redis(
    store: PredictionStore,
    predictor: Predictor,
    redis_client: fakeredis.FakeRedis,
    model: CountingModel,
) -> None:
    cache = _cache(store, predictor)
    cache.get("ETH-EUR")
    redis_client.flushall()
    assert cache.get("ETH-EUR").outcome is Outcome.MISS_COMPUTED
    assert model.calls == ["ETH-EUR", "ETH-EUR"]


def test_near_copies_expire_even_when_read_all_the_time(
    store: PredictionStore, predictor: Predictor, redis_client: fakeredis.FakeRedis
) -> None:
    clock = ManualClock(now=CLOCK.now())
    near = NearCache(0.25, clock)
    cache = PredictionCache(store, predictor, _limits(), clock, near_cache=near)
    cache.get("ETH-EUR")
    redis_client.flushall()
    for _ in range(2):  # hits at 0.1 s, 0.2 s: served from the copy taken at 0
        clock.seconds += 0.1
        assert cache.get("ETH-EUR").outcome is Outcome.HIT
    # 0.3 s: the copy is too old, however often it was read; Redis has nothing.
    clock.seconds += 0.1
    assert cache.get("ETH-EUR").outcome is Outcome.MISS_COMPUTED


def test_redis_down_serves_the_last_known_prediction_marked_stale(predictor: Predictor) -> None:
    dead = DeadRedisStore()
    clock = ManualClock(now=CLOCK.now())
    cache = PredictionCache(
        dead, predictor, _limits(stale_grace_seconds=60), clock, near_cache=NearCache(0, clock)
    )
    with pytest.raises(CacheUnavailable):
        cache.get("ETH-EUR")  # nothing known yet
    known = predictor.compute("ETH-EUR")
    cache.near.put(known)
    assert cache.get("ETH-EUR") == cache.get("ETH-EUR")
    assert cache.get("ETH-EUR").outcome is Outcome.STALE
    clock.instant = known.fresh_until + 59
    assert cache.get("ETH-EUR").outcome is Outcome.STALE
    clock.instant = known.fresh_until + 60  # past the grace: never served
    with pytest.raises(CacheUnavailable):
        cache.get("ETH-EUR")


def test_a_failing_model_falls_back_to_stale_within_grace(
    store: PredictionStore, redis_client: fakeredis.FakeRedis
) -> None:
    predictor = Predictor(
        FailingModel(), SyntheticMarketData(), horizon_seconds=300, ttl_seconds=30, clock=CLOCK
    )
    cache = _cache(store, predictor, stale_grace_seconds=60)
    good = Predictor(CountingModel(), SyntheticMarketData(), 300, 30, clock=CLOCK).compute(
        "ETH-EUR"
    )
    cache.near.put(good)  # seen earlier, now expired from Redis
    assert cache.get("ETH-EUR").outcome is Outcome.STALE
    assert redis_client.keys(prediction_key("*", "*")) == []


def test_the_breaker_stops_trying_a_failing_redis(predictor: Predictor) -> None:
    dead = DeadRedisStore()
    clock = ManualClock()
    breaker = CircuitBreaker(threshold=3, open_seconds=1.0, clock=clock)
    cache = PredictionCache(dead, predictor, _limits(), CLOCK, breaker=breaker)
    for _ in range(10):
        with pytest.raises(CacheUnavailable):
            cache.get("ETH-EUR")
    assert dead.attempts == 3
    clock.seconds = 1.5  # open interval over: one trial
    with pytest.raises(CacheUnavailable):
        cache.get("ETH-EUR")
    assert dead.attempts == 4


def test_limits_come_from_the_settings() -> None:
    settings = Settings(
        compute_timeout_seconds=7, stale_grace_seconds=5, api_worker_connections=100
    )
    limits = Limits.from_settings(settings)
    assert limits.compute_timeout_seconds == 7 and limits.stale_grace_seconds == 5
    assert limits.max_concurrent_computes == settings.max_concurrent_computes
    assert limits.early_revalidation_beta == settings.early_revalidation_beta
    assert limits.failed_compute_backoff_seconds == settings.failed_compute_backoff_seconds
    # A tenth of the connections are left for hits, however many requests wait on misses.
    assert limits.max_waiting == 90
    assert Limits.from_settings(Settings(api_worker_connections=1)).max_waiting == 1


def test_a_cache_without_a_breaker_makes_one_from_its_limits(
    store: PredictionStore, predictor: Predictor
) -> None:
    cache = PredictionCache(store, predictor, _limits(circuit_failure_threshold=7), CLOCK)
    assert cache.breaker.threshold == 7
    assert cache.breaker.open_seconds == Settings().circuit_open_seconds


def _stored(store: PredictionStore, predictor: Predictor, pairs: list[str]) -> str:
    """Compute and store the pairs under the predictor's model, made the active version."""
    predictions = [predictor.compute(pair) for pair in pairs]
    version = predictions[0].model_version
    store.redis.set(active_version_key(), version)
    assert store.write_many(predictions, CLOCK.now()) == len(pairs)
    return version


def test_warm_fills_copies_that_are_served_while_the_feed_is_followed(
    store: PredictionStore, predictor: Predictor
) -> None:
    version = _stored(store, predictor, ["ETH-EUR", "BTC-EUR"])
    near = NearCache(0.25, CLOCK)
    cache = PredictionCache(store, predictor, _limits(), CLOCK, near_cache=near)
    near.follow(version, flip_pending=False)
    assert cache.warm(["BTC-EUR", "ETH-EUR", "SOL-EUR"], chunk=2) == 2  # SOL-EUR: nothing stored
    assert near.holds("BTC-EUR") and near.holds("ETH-EUR") and not near.holds("SOL-EUR")
    assert near.get("ETH-EUR") is None  # the stream not yet confirmed
    near.confirmed(CLOCK.monotonic())
    assert near.get("ETH-EUR") == store.read("ETH-EUR").predictions["ETH-EUR"]
    assert near.get("BTC-EUR") is not None
    # Copies the feed does not vouch for are never served on their own: no max_age.
    near.unfollow()
    assert near.get("ETH-EUR") is None


def test_warm_copies_at_most_max_pairs_and_reads_no_further(
    store: PredictionStore, predictor: Predictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    pairs = ["A-EUR", "B-EUR", "C-EUR", "D-EUR", "E-EUR"]
    version = _stored(store, predictor, pairs)
    near = NearCache(0.25, CLOCK, max_pairs=3)
    cache = PredictionCache(store, predictor, _limits(), CLOCK, near_cache=near)
    near.follow(version, flip_pending=False)
    read: list[list[str]] = []
    read_many = store.read_many

    def counted(wanted: list[str]):  # type: ignore[no-untyped-def]
        read.append(list(wanted))
        return read_many(wanted)

    monkeypatch.setattr(store, "read_many", counted)
    assert cache.warm(pairs, chunk=2) == 3
    assert read == [["A-EUR", "B-EUR"], ["C-EUR"]]
    assert [near.holds(pair) for pair in pairs] == [True, True, True, False, False]
