from __future__ import annotations

import dataclasses
import time

import fakeredis
import pytest

from beat_schedule import (
    CLOCK_SKEW_ALLOWANCE_SECONDS,
    REFRESH_ALL_TASK,
    REFRESH_BATCH_TASK,
    build_schedule,
)
from predictions.cache.store import PredictionStore
from predictions.infra.keys import (
    active_version_key,
    compute_lock_key,
    prediction_key,
    refresh_slot_key,
)
from predictions.model import ModelLoadError
from predictions.model.market_data import PriceWindow, SyntheticMarketData
from predictions.model.predictor import Predictor
from predictions.settings import Settings, SettingsError
from predictions.wiring import Wiring
from tests.harness.doubles import CountingModel, HostClock
from tests.unit.conftest import wiring_of
from worker.celery_app import create_celery
from worker.refresh import (
    batches,
    claim_refresh_slot,
    lock_plan,
    refresh_batch,
)
from worker.tasks import DEPRECATED_REFRESH_BATCH_TASK


def test_refresh_writes_every_pair_with_its_expiry(
    wiring: Wiring,
    redis_client: fakeredis.FakeRedis,
    model: CountingModel,
    settings: Settings,
) -> None:
    assert refresh_batch(["ETH-EUR", "btc-eur"], wiring) == 2
    assert model.calls == ["ETH-EUR", "BTC-EUR"]
    for pair in ("ETH-EUR", "BTC-EUR"):
        assert 0 < redis_client.pttl(prediction_key(pair, model.version)) <= 30_000


def test_refresh_ignores_pairs_that_are_not_configured(
    wiring: Wiring,
    redis_client: fakeredis.FakeRedis,
    model: CountingModel,
    settings: Settings,
) -> None:
    assert refresh_batch(["SOL-EUR", "not a pair", "ETH-EUR"], wiring) == 1
    assert model.calls == ["ETH-EUR"]
    assert redis_client.keys(prediction_key("*", "*")) == [
        prediction_key("ETH-EUR", model.version).encode()
    ]
    # The worker's model became the active version of this fresh cache.
    assert redis_client.get(active_version_key()) == model.version.encode()


def test_a_failing_pair_keeps_its_previous_prediction_and_others_refresh(
    store: PredictionStore, settings: Settings, redis_client: fakeredis.FakeRedis
) -> None:
    class FailsOnEth(CountingModel):
        def predict(self, pair: str, prices: PriceWindow, horizon_seconds: int = 0) -> float:
            if pair == "ETH-EUR" and self.calls:
                raise RuntimeError("bad data")
            return super().predict(pair, prices, horizon_seconds)

    predictor = Predictor(
        FailsOnEth(), SyntheticMarketData(), 300, settings.prediction_ttl_seconds, clock=HostClock()
    )
    wiring = wiring_of(settings, store, predictor)
    assert refresh_batch(["ETH-EUR"], wiring) == 1
    before = store.read("ETH-EUR").predictions["ETH-EUR"]
    assert before is not None
    assert refresh_batch(["ETH-EUR", "BTC-EUR"], wiring) == 1
    assert store.read_many(["ETH-EUR", "BTC-EUR"]).predictions == {
        "ETH-EUR": before,
        "BTC-EUR": store.read_version("BTC-EUR", before.model_version),
    }
    assert store.read_version("BTC-EUR", before.model_version) is not None


@pytest.mark.parametrize(
    ("count", "size", "minimum", "expected"),
    [(0, 100, 4, []), (4, 100, 4, [1, 1, 1, 1]), (3, 100, 4, [1, 1, 1]), (10, 100, 4, [3, 3, 3, 1]),
     (1_000, 100, 4, [100] * 10), (1_001, 100, 4, [91] * 11)],
)  # fmt: skip
def test_batches_cover_every_pair_once(
    count: int, size: int, minimum: int, expected: list[int]
) -> None:
    pairs = [f"P{i:04d}-EUR" for i in range(count)]
    chunks = batches(pairs, size, minimum)
    assert [len(chunk) for chunk in chunks] == expected
    assert [pair for chunk in chunks for pair in chunk] == pairs


def test_celery_is_configured_for_safe_delivery() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:6399/2")
    conf = create_celery(settings).conf
    assert conf.broker_url == "redis://127.0.0.1:6399/3"
    assert conf.accept_content == ["json"]
    assert conf.task_serializer == "json"
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_ignore_result
    assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit
    assert conf.task_time_limit > conf.task_soft_time_limit


@pytest.mark.parametrize(
    ("env", "expected", "absent"),
    [
        (
            {"CELERY_BROKER_URL": "amqp://guest:guest@rabbit:5672//"},
            "read_timeout",
            "visibility_timeout",
        ),
        (
            {"REDIS_SENTINELS": "s1:26379", "REDIS_SENTINEL_MASTER": "cache"},
            "master_name",
            "global_keyprefix",
        ),
        ({"CELERY_BROKER_DATABASE": "same"}, "global_keyprefix", "master_name"),
    ],
)
def test_broker_transport_options_fit_the_broker(
    env: dict[str, str], expected: str, absent: str
) -> None:
    options = create_celery(Settings.from_env(env)).conf.broker_transport_options
    assert expected in options and absent not in options
    if "master_name" in options:
        assert options["master_name"] == "cache"


def test_a_bad_broker_stops_the_worker_at_start_up() -> None:
    with pytest.raises(SettingsError, match="CELERY_BROKER_URL"):
        create_celery(Settings.from_env({"CELERY_BROKER_URL": "kafka://k:9092"}))


def test_every_scheduled_task_exists_and_expires_past_any_clock_skew() -> None:
    settings = Settings(prediction_ttl_seconds=6, refresh_interval_seconds=2)
    app = create_celery(settings)
    app.loader.import_default_modules()
    schedule = app.conf.beat_schedule
    assert schedule == build_schedule(2)
    for entry in schedule.values():
        assert entry["task"] in app.tasks
        # Celery's expiry compares two hosts' clocks: it must outlast their skew. A
        # backlog within it refreshes once, by the refresh slot (see the next tests).
        expires = entry["options"]["expires"]
        assert expires == entry["schedule"] + CLOCK_SKEW_ALLOWANCE_SECONDS >= 60
    assert REFRESH_ALL_TASK in app.tasks
    assert REFRESH_BATCH_TASK in app.tasks
    # The batch task's name in 0.1.0, kept for a rolling upgrade (docs/operations.md).
    assert DEPRECATED_REFRESH_BATCH_TASK in app.tasks


def test_warm_start_scheduler_is_due_at_once() -> None:
    from worker.schedulers import WarmStartScheduler

    app = create_celery(Settings(prediction_ttl_seconds=60, refresh_interval_seconds=20))
    scheduler = WarmStartScheduler(app, lazy=False)
    entry = scheduler.schedule["refresh-all-predictions"]
    is_due, _ = entry.is_due()
    assert is_due
    assert time.time() - entry.last_run_at.timestamp() > 20


def test_a_refresh_skips_a_pair_someone_is_computing(
    wiring: Wiring,
    redis_client: fakeredis.FakeRedis,
    model: CountingModel,
    settings: Settings,
) -> None:
    redis_client.set(compute_lock_key("ETH-EUR", "counting-1"), b"api-request-token", px=10_000)
    assert refresh_batch(["ETH-EUR", "BTC-EUR"], wiring) == 1
    assert model.calls == ["BTC-EUR"]
    # The other holder's lock is untouched; the refresh's own locks are released.
    assert redis_client.get(compute_lock_key("ETH-EUR", "counting-1")) == b"api-request-token"
    assert not redis_client.exists(compute_lock_key("BTC-EUR", "counting-1"))


def test_locks_are_taken_in_groups_that_fit_the_lock_lifetime(
    store: PredictionStore, settings: Settings, redis_client: fakeredis.FakeRedis
) -> None:
    slept: list[float] = []
    predictor = Predictor(
        CountingModel(),
        SyntheticMarketData(),
        300,
        30,
        simulated_latency_seconds=1.0,
        sleep=slept.append,
        clock=HostClock(),
    )
    held: list[int] = []
    original = predictor.compute

    def compute(pair: str, model=None):  # type: ignore[no-untyped-def]
        held.append(len(redis_client.keys("pc:lock:*")))
        return original(pair, model)

    predictor.compute = compute  # type: ignore[method-assign, assignment]
    wiring = wiring_of(settings, store, predictor)
    assert (
        refresh_batch(
            list(settings.pairs),
            dataclasses.replace(
                wiring, settings=dataclasses.replace(settings, compute_timeout_seconds=4)
            ),
        )
        == 4
    )
    # 1 s a pair and a 4 s lock: groups of one, so no lock outlives half its life.
    assert held == [1, 1, 1, 1]


def test_one_refresh_per_interval_whoever_asks(redis_client: fakeredis.FakeRedis) -> None:
    assert claim_refresh_slot(redis_client, 20, now=1_000.0)
    assert not claim_refresh_slot(redis_client, 20, now=1_019.9)  # a second beat
    assert claim_refresh_slot(redis_client, 20, now=1_020.0)  # the next interval
    assert 0 < redis_client.pttl(refresh_slot_key(51, 20)) <= 40_000


@pytest.mark.parametrize(
    ("latency", "timeout", "interval", "group", "lock"),
    [
        (0.5, 5, 1, 1, 1.51),  # a killed refresh blocks its pair for 1.5 s, not 5
        (1.0, 10, 20, 4, 8.54),
        (0.0, 10, 20, 1000, 10),  # capped by the compute timeout
    ],
)
def test_lock_plan_keeps_locks_short_but_longer_than_their_work(
    latency: float, timeout: float, interval: float, group: int, lock: float
) -> None:
    size, seconds = lock_plan(latency, timeout, interval)
    assert size == group
    assert seconds == pytest.approx(lock)
    assert seconds > size * (latency + 0.005)  # no lock expires while its group computes


def test_a_bad_model_stops_the_worker_at_start_up() -> None:
    with pytest.raises(ModelLoadError, match="MODEL"):
        create_celery(Settings(model="no.such.module:Model"))
