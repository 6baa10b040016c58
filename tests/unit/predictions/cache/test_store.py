from __future__ import annotations

import dataclasses
import time

import fakeredis
import pytest

from predictions.cache.store import PredictionStore
from predictions.infra.keys import active_version_key, flip_pending_key, prediction_key
from predictions.model.predictor import Predictor
from tests.harness.doubles import HostClock, make_prediction

M1 = make_prediction().model_version  # the version of make_prediction()'s predictions


def _activate(client: fakeredis.FakeRedis, version: str) -> None:
    client.set(active_version_key(), version)


def test_a_write_sets_value_and_expiry_together(
    store: PredictionStore, redis_client: fakeredis.FakeRedis, predictor: Predictor
) -> None:
    prediction = predictor.compute("ETH-EUR")
    assert store.write(prediction, now=prediction.computed_at)
    ttl_ms = redis_client.pttl(prediction_key("ETH-EUR", prediction.model_version))
    assert 29_000 < ttl_ms <= 30_000
    assert store.read_version("ETH-EUR", prediction.model_version) == prediction
    _activate(redis_client, prediction.model_version)
    assert store.read("ETH-EUR").predictions == {"ETH-EUR": prediction}


def test_the_expiry_is_the_predictions_own_however_late_the_write(
    store: PredictionStore, redis_client: fakeredis.FakeRedis
) -> None:
    now = time.time()
    computed_20s_ago = make_prediction(computed_at=now - 20, fresh_until=now + 10)
    store.write(computed_20s_ago, now=now)
    assert 9_000 < redis_client.pttl(prediction_key("ETH-EUR", M1)) <= 10_000
    # The same write arriving again later (a retry, a frozen Redis waking up) does
    # not start a new lifetime.
    assert not store.write(computed_20s_ago, now=now + 5)
    assert redis_client.pttl(prediction_key("ETH-EUR", M1)) <= 10_000


def test_a_late_write_never_replaces_a_newer_prediction(
    store: PredictionStore, redis_client: fakeredis.FakeRedis
) -> None:
    now = round(time.time(), 3)
    older = make_prediction(computed_at=now - 2, fresh_until=now + 58, predicted_price=1.0)
    newer = make_prediction(computed_at=now - 1, fresh_until=now + 59, predicted_price=2.0)
    assert store.write(newer, now)
    assert not store.write(older, now)  # finished last, computed first: refused
    assert store.read_version("ETH-EUR", M1) == newer
    assert store.write_many([older, newer], now) == 0  # both already there or older
    # Another version's key is its own: no comparison across versions.
    other = dataclasses.replace(older, model_version="m-2", body=b"")
    assert store.write(other, now)


def test_a_read_never_returns_a_prediction_past_its_grace(
    redis_client: fakeredis.FakeRedis,
) -> None:
    store = PredictionStore(redis_client, grace_seconds=10, clock=HostClock())
    _activate(redis_client, M1)
    now = round(time.time(), 3)
    stale = make_prediction(computed_at=now - 65, fresh_until=now - 5)
    gone = make_prediction(pair="BTC-EUR", computed_at=now - 71, fresh_until=now - 11)
    # Redis still holds both (its clock is behind ours): only the one in grace is read.
    redis_client.set(prediction_key("ETH-EUR", M1), stale.to_json(), ex=60)
    redis_client.set(prediction_key("BTC-EUR", M1), gone.to_json(), ex=60)
    assert store.read_many(["ETH-EUR", "BTC-EUR"]).predictions == {
        "ETH-EUR": stale,
        "BTC-EUR": None,
    }
    assert not stale.is_fresh(now)


def test_a_prediction_past_its_grace_is_not_written(
    store: PredictionStore, redis_client: fakeredis.FakeRedis, predictor: Predictor
) -> None:
    prediction = predictor.compute("ETH-EUR")
    assert not store.write(prediction, now=prediction.fresh_until + 1)
    assert redis_client.dbsize() == 0


def test_reads_say_the_active_version_and_a_pending_flip(
    store: PredictionStore, redis_client: fakeredis.FakeRedis
) -> None:
    read = store.read("ETH-EUR")
    assert (read.version, read.flip_pending, read.predictions) == (None, False, {"ETH-EUR": None})
    _activate(redis_client, M1)
    redis_client.set(flip_pending_key(), "m-2", ex=60)
    read = store.read("ETH-EUR")
    assert (read.version, read.flip_pending, read.predictions) == (M1, True, {"ETH-EUR": None})


@pytest.mark.parametrize("kind", ["garbage", "hash", "list", "other-pair", "other-version"])
def test_unreadable_entries_read_as_none(
    kind: str,
    store: PredictionStore,
    redis_client: fakeredis.FakeRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _activate(redis_client, M1)
    key = prediction_key("ETH-EUR", M1)
    if kind == "garbage":
        redis_client.set(key, b"\x80not json")
    elif kind == "hash":
        redis_client.hset(key, "price", "1")
    elif kind == "list":
        redis_client.rpush(key, "1")
    elif kind == "other-pair":
        redis_client.set(key, make_prediction(pair="BTC-EUR").to_json())
    else:
        redis_client.set(key, make_prediction(model_version="m-9").to_json())
    assert store.read("ETH-EUR").predictions == {"ETH-EUR": None}
    if kind not in ("hash", "list"):
        assert "pair=ETH-EUR" in caplog.text
    assert store.read_version("ETH-EUR", M1) is None
    # A write replaces whatever was there, of any type.
    now = time.time()
    assert store.write(make_prediction(computed_at=now, fresh_until=now + 60), now)


def test_write_many_and_read_many_take_one_round_trip_each(
    store: PredictionStore, redis_client: fakeredis.FakeRedis, predictor: Predictor
) -> None:
    pairs = ["ETH-EUR", "BTC-EUR", "ETH-USD"]
    predictions = [predictor.compute(pair) for pair in pairs]
    assert store.write_many(predictions, time.time()) == 3
    _activate(redis_client, predictions[0].model_version)
    assert store.read_many([*pairs, "BTC-USD"]).predictions == {
        **dict(zip(pairs, predictions, strict=True)),
        "BTC-USD": None,
    }
    assert store.read_many([]).predictions == {}


def test_freshness_counts_every_pair_and_names_the_worst_a_chunk_at_a_time(
    store: PredictionStore, redis_client: fakeredis.FakeRedis
) -> None:
    now = time.time()
    ages = {"ETH-EUR": 10.0, "BTC-EUR": 50.0, "ETH-USD": 30.0, "SOL-EUR": 1.0}
    for pair, age in ages.items():  # fresh for 20 s from computed_at
        made = make_prediction(
            pair=pair, computed_at=round(now - age, 3), fresh_until=round(now - age + 20, 3)
        )
        redis_client.set(prediction_key(pair, M1), made.to_json())
    redis_client.set(prediction_key("ADA-EUR", M1), b'{"computed_at":"x"}')  # unreadable
    pairs = [*ages, "ADA-EUR", "BTC-USD"]
    assert store.freshness(pairs, now, 10).counts == {"fresh": 0, "stale": 0, "missing": 6}
    _activate(redis_client, M1)
    calls: list[int] = []
    script = store._read_times

    def counted(keys: list[str], args: list[str]) -> object:
        calls.append(len(args) - 1)
        return script(keys=keys, args=args)

    store._read_times = counted  # type: ignore[assignment]
    found = store.freshness(pairs, now, 4, chunk=4)
    assert calls == [4, 2]
    assert found.counts == {"fresh": 2, "stale": 2, "missing": 2}
    # Missing first (in name order), then the oldest.
    assert [pair for pair, _ in found.worst] == ["ADA-EUR", "BTC-USD", "BTC-EUR", "ETH-USD"]
    assert found.worst[2][1] == pytest.approx(now - 50, abs=0.01)
    assert found.worst[0][1] is None
