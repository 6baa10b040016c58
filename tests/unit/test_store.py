from __future__ import annotations

import time

import fakeredis
import pytest

from predictions.keys import prediction_key
from predictions.predictor import Predictor
from predictions.store import PredictionStore
from tests.support import make_prediction


def test_a_write_sets_value_and_expiry_together(
    store: PredictionStore, redis_client: fakeredis.FakeRedis, predictor: Predictor
) -> None:
    prediction = predictor.compute("ETH-EUR")
    assert store.write(prediction, now=prediction.computed_at)
    ttl_ms = redis_client.pttl(prediction_key("ETH-EUR"))
    assert 29_000 < ttl_ms <= 30_000
    assert store.read("ETH-EUR") == prediction


def test_the_expiry_is_the_predictions_own_however_late_the_write(
    store: PredictionStore, redis_client: fakeredis.FakeRedis
) -> None:
    now = time.time()
    computed_20s_ago = make_prediction(computed_at=now - 20, fresh_until=now + 10)
    store.write(computed_20s_ago, now=now)
    assert 9_000 < redis_client.pttl(prediction_key("ETH-EUR")) <= 10_000
    # The same write arriving again later (a retry, a frozen Redis waking up) does
    # not start a new lifetime.
    store.write(computed_20s_ago, now=now + 5)
    assert redis_client.pttl(prediction_key("ETH-EUR")) <= 10_000


def test_a_read_never_returns_an_expired_prediction(
    store: PredictionStore, redis_client: fakeredis.FakeRedis
) -> None:
    now = time.time()
    # Redis still holds it (its clock is behind ours): we must not serve it.
    expired = make_prediction(computed_at=now - 61, fresh_until=now - 1)
    redis_client.set(prediction_key("ETH-EUR"), expired.to_json(), ex=60)
    assert store.read("ETH-EUR") is None
    assert store.read_many(["ETH-EUR"]) == {"ETH-EUR": None}


def test_an_expired_prediction_is_not_written(
    store: PredictionStore, redis_client: fakeredis.FakeRedis, predictor: Predictor
) -> None:
    prediction = predictor.compute("ETH-EUR")
    assert not store.write(prediction, now=prediction.fresh_until + 1)
    assert redis_client.dbsize() == 0


def test_read_of_a_missing_pair_is_none(store: PredictionStore) -> None:
    assert store.read("ETH-EUR") is None


@pytest.mark.parametrize("kind", ["garbage", "hash", "list", "other-pair"])
def test_unreadable_entries_read_as_none(
    kind: str,
    store: PredictionStore,
    redis_client: fakeredis.FakeRedis,
    predictor: Predictor,
    caplog: pytest.LogCaptureFixture,
) -> None:
    key = prediction_key("ETH-EUR")
    if kind == "garbage":
        redis_client.set(key, b"\x80not json")
    elif kind == "hash":
        redis_client.hset(key, "price", "1")
    elif kind == "list":
        redis_client.rpush(key, "1")
    else:
        redis_client.set(key, predictor.compute("BTC-EUR").to_json())
    assert store.read("ETH-EUR") is None
    assert "pair=ETH-EUR" in caplog.text
    assert store.read_many(["ETH-EUR"]) == {"ETH-EUR": None}


def test_write_many_and_read_many_take_one_round_trip_each(
    store: PredictionStore, predictor: Predictor
) -> None:
    pairs = ["ETH-EUR", "BTC-EUR", "ETH-USD"]
    predictions = [predictor.compute(pair) for pair in pairs]
    assert store.write_many(predictions, time.time()) == 3
    assert store.read_many([*pairs, "BTC-USD"]) == {
        **dict(zip(pairs, predictions, strict=True)),
        "BTC-USD": None,
    }
    assert store.read_many([]) == {}
