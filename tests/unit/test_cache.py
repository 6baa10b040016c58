from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import fakeredis
import pytest

from predictions.cache import ComputeTimeout, Outcome, PredictionCache
from predictions.keys import compute_lock_key
from predictions.market_data import SyntheticMarketData
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
