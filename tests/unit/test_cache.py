from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import fakeredis
import pytest

from predictions.cache import ComputeTimeout, Outcome, PredictionCache
from predictions.keys import compute_lock_key
from predictions.market_data import SyntheticMarketData
from predictions.near_cache import NearCache
from predictions.predictor import PredictionFailed, Predictor
from predictions.store import PredictionStore
from tests.support import CountingModel, FailingModel


def _cache(store: PredictionStore, predictor: Predictor, timeout: float = 5.0) -> PredictionCache:
    return PredictionCache(
        store, predictor, compute_timeout_seconds=timeout, poll_interval_seconds=0.005
    )


def test_a_miss_computes_and_stores_then_hits(
    store: PredictionStore, predictor: Predictor, model: CountingModel
) -> None:
    cache = _cache(store, predictor)
    first = cache.get("ETH-EUR")
    second = cache.get("ETH-EUR")
    assert (first.outcome, second.outcome) == (Outcome.MISS, Outcome.HIT)
    assert first.prediction == second.prediction
    assert model.calls == ["ETH-EUR"]


def test_concurrent_misses_compute_once(
    store: PredictionStore, predictor: Predictor, model: CountingModel
) -> None:
    # A slow model keeps the lock held while the other threads arrive.
    started = threading.Event()
    original = model.predict

    def slow_predict(*args: object) -> float:
        started.set()
        time.sleep(0.2)
        return original(*args)  # type: ignore[arg-type]

    model.predict = slow_predict  # type: ignore[method-assign]
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
    redis_client.set(compute_lock_key("ETH-EUR"), "other-token", px=60_000)
    with pytest.raises(ComputeTimeout):
        _cache(store, predictor, timeout=0.1).get("ETH-EUR")


def test_a_dead_owner_lock_expires_and_a_waiter_computes(
    store: PredictionStore,
    predictor: Predictor,
    redis_client: fakeredis.FakeRedis,
    model: CountingModel,
) -> None:
    redis_client.set(compute_lock_key("ETH-EUR"), "crashed-owner", px=100)
    lookup = _cache(store, predictor, timeout=2).get("ETH-EUR")
    assert lookup.outcome is Outcome.MISS
    assert model.calls == ["ETH-EUR"]


def test_a_failed_computation_releases_the_lock_and_writes_nothing(
    store: PredictionStore, redis_client: fakeredis.FakeRedis
) -> None:
    predictor = Predictor(
        FailingModel(), SyntheticMarketData(), horizon_seconds=300, ttl_seconds=30
    )
    with pytest.raises(PredictionFailed):
        _cache(store, predictor).get("ETH-EUR")
    assert redis_client.keys("*") == []


def test_near_cache_serves_repeats_without_redis(
    store: PredictionStore, predictor: Predictor, redis_client: fakeredis.FakeRedis
) -> None:
    cache = PredictionCache(store, predictor, compute_timeout_seconds=5, near_cache=NearCache(60))
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
    assert cache.get("ETH-EUR").outcome is Outcome.MISS
    assert model.calls == ["ETH-EUR", "ETH-EUR"]


def test_near_copies_expire_even_when_read_all_the_time(
    store: PredictionStore, predictor: Predictor, redis_client: fakeredis.FakeRedis
) -> None:
    mono = [0.0]
    near = NearCache(0.25, monotonic=lambda: mono[0])
    cache = PredictionCache(store, predictor, compute_timeout_seconds=5, near_cache=near)
    cache.get("ETH-EUR")
    redis_client.flushall()
    for _ in range(2):  # hits at 0.1 s, 0.2 s: served from the copy taken at 0
        mono[0] += 0.1
        assert cache.get("ETH-EUR").outcome is Outcome.HIT
    # 0.3 s: the copy is too old, however often it was read; Redis has nothing.
    mono[0] += 0.1
    assert cache.get("ETH-EUR").outcome is Outcome.MISS
