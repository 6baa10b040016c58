from __future__ import annotations

import dataclasses
import time

import fakeredis
import pytest
from kombu.exceptions import OperationalError

from beat_schedule import (
    CLOCK_SKEW_ALLOWANCE_SECONDS,
    REFRESH_ALL_TASK,
    REFRESH_BATCH_TASK,
    build_schedule,
)
from predictions.cache.store import PredictionStore
from predictions.infra.keys import (
    active_version_key,
    asked_pairs_key,
    beat_tick_key,
    compute_lock_key,
    prediction_key,
    refresh_slot_key,
)
from predictions.model import ModelLoadError
from predictions.model.market_data import PriceWindow, SyntheticMarketData
from predictions.model.predictor import Predictor
from predictions.registry import PairRegistry
from predictions.settings import Settings, SettingsError
from predictions.wiring import Wiring, wire
from tests.harness.doubles import CountingModel, HostClock, ManualClock
from tests.unit.conftest import wiring_of
from worker.celery_app import create_celery
from worker.refresh import (
    batches,
    claim_refresh_slot,
    due_pairs,
    lock_plan,
    refresh_batch,
)
from worker.schedulers import WarmStartScheduler
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


# The pair registry: which pairs a refresh covers, and beat following it.


def _seeded(wiring: Wiring, own: dict[str, str] | None = None) -> PairRegistry:
    """The registry seeded from PAIRS (as a process starting does), with pairs of
    their own freshness added by the pairs command."""
    wiring.known.seed()
    if own:
        wiring.registry.add(own)
    return wiring.registry


def _with(wiring: Wiring, **changes: object) -> Wiring:
    """The same process's objects (its Redis, clock, predictor) under other settings."""
    return wiring_of(
        dataclasses.replace(wiring.settings, **changes),  # type: ignore[arg-type]
        wiring.store,
        wiring.predictor,
    )


def test_due_pairs_are_the_known_pairs_refreshed_every_interval(
    wiring: Wiring, settings: Settings
) -> None:
    _seeded(wiring, {"SOL-EUR": ":5", "ADA-EUR": "60:20", "XRP-EUR": "90:"})
    now = 1_000.0
    assert due_pairs(wiring, 10, now) == sorted([*settings.pairs, "XRP-EUR"])
    assert due_pairs(wiring, 5, now) == ["SOL-EUR"]
    assert due_pairs(wiring, 20.0, now) == ["ADA-EUR"]
    assert due_pairs(wiring, 7, now) == []


def test_due_pairs_follow_the_registry_without_being_told(wiring: Wiring) -> None:
    registry = _seeded(wiring)
    assert "BTC-EUR" in due_pairs(wiring, 10, 1_000.0)
    registry.remove(["BTC-EUR"])  # by the pairs command, in another process
    registry.add({"SOL-EUR": ""})
    assert due_pairs(wiring, 10, 1_000.0) == ["BTC-USD", "ETH-EUR", "ETH-USD", "SOL-EUR"]


def test_under_precompute_asked_only_pairs_asked_lately_are_due(
    wiring: Wiring, redis_client: fakeredis.FakeRedis
) -> None:
    asked = _with(wiring, precompute="asked")
    _seeded(asked, {"SOL-EUR": "600:200"})
    now = 10_000.0
    redis_client.zadd(
        asked_pairs_key(),
        {
            "ETH-EUR": now - 5,  # asked 5 s ago
            "BTC-EUR": now - 3 * 30 - 1,  # past three 30 s lifetimes
            "SOL-EUR": now - 1_000,  # long ago, but within three of its 600 s
        },
    )
    assert due_pairs(asked, 10, now) == ["ETH-EUR"]
    # The refresh of the 10 s pairs must not have dropped what SOL-EUR needs.
    assert due_pairs(asked, 200, now) == ["SOL-EUR"]
    assert due_pairs(asked, 200, now + 801) == []


def test_under_precompute_off_nothing_is_due_and_redis_is_not_read(
    wiring: Wiring, redis_client: fakeredis.FakeRedis
) -> None:
    off = _with(wiring, precompute="off")
    _seeded(off)
    redis_client.zadd(asked_pairs_key(), {"ETH-EUR": 999.0})
    calls: list[tuple[object, ...]] = []
    execute = redis_client.execute_command

    def recorded(*args: object, **options: object) -> object:
        calls.append(args)
        return execute(*args, **options)  # type: ignore[no-untyped-call]

    redis_client.execute_command = recorded  # type: ignore[method-assign]
    assert due_pairs(off, 10, 1_000.0) == []
    assert calls == []


def test_a_refresh_ignores_pairs_removed_since_its_message_was_sent(
    wiring: Wiring, model: CountingModel, redis_client: fakeredis.FakeRedis
) -> None:
    registry = _seeded(wiring)
    assert wiring.known.reload_if_changed() is False  # the view is current
    registry.remove(["ETH-EUR"])  # after beat sent the batch
    assert refresh_batch(["ETH-EUR", "BTC-EUR"], wiring) == 1
    assert model.calls == ["BTC-EUR"]
    assert not redis_client.exists(prediction_key("ETH-EUR", model.version))
    # And a pair added since is refreshed by the next batch that names it.
    registry.add({"SOL-EUR": ""})
    assert refresh_batch(["SOL-EUR"], wiring) == 1


def test_a_refresh_writes_each_pair_with_its_own_ttl(
    settings: Settings, redis_client: fakeredis.FakeRedis
) -> None:
    # The predictor wire() builds: its TTL per pair is the registry's.
    wiring = wire(settings, role="worker", redis_client=redis_client, clock=HostClock())
    _seeded(wiring, {"SOL-EUR": "90:"})
    assert refresh_batch(["SOL-EUR", "ETH-EUR"], wiring) == 2
    stored = wiring.store.read_many(["SOL-EUR", "ETH-EUR"]).predictions
    sol, eth = stored["SOL-EUR"], stored["ETH-EUR"]
    assert sol is not None and eth is not None
    assert sol.fresh_until - sol.computed_at == pytest.approx(90)
    assert eth.fresh_until - eth.computed_at == pytest.approx(settings.prediction_ttl_seconds)


def test_each_refresh_interval_has_its_own_slot(redis_client: fakeredis.FakeRedis) -> None:
    assert claim_refresh_slot(redis_client, 10, now=1_000.0)
    assert claim_refresh_slot(redis_client, 5, now=1_000.0)  # another interval, same instant
    assert claim_refresh_slot(redis_client, 2.5, now=1_000.0)
    assert not claim_refresh_slot(redis_client, 5, now=1_004.9)
    assert not claim_refresh_slot(redis_client, 10, now=1_009.9)
    assert claim_refresh_slot(redis_client, 5, now=1_005.0)
    assert redis_client.exists(refresh_slot_key(100, 10), refresh_slot_key(200, 5)) == 2
    assert redis_client.exists(refresh_slot_key(400, 2.5)) == 1
    assert refresh_slot_key(400, 2.5) != refresh_slot_key(400, 25)


class Sent:
    """A Celery app's send_task, recording what it would send."""

    def __init__(self) -> None:
        self.messages: list[dict[str, object]] = []

    def __call__(self, name: str, args: object = None, kwargs: object = None, **options: object):  # type: ignore[no-untyped-def]
        self.messages.append({"name": name, "args": args, "kwargs": kwargs, **options})

    def take(self) -> list[dict[str, object]]:
        messages, self.messages = self.messages, []
        return messages


@pytest.fixture
def beat(wiring: Wiring, settings: Settings) -> tuple[WarmStartScheduler, Sent, ManualClock]:
    """Beat's scheduler on a real Celery app, with a Redis of the test's and a clock
    moved by hand; what it sends is recorded, never sent."""
    clock = ManualClock(now=1_000.0)
    app = create_celery(settings)
    sent = Sent()
    app.send_task = sent
    scheduler = WarmStartScheduler(app, lazy=False)
    scheduler._wiring = dataclasses.replace(wiring, clock=clock)
    scheduler._wiring.known.seed()
    return scheduler, sent, clock


def test_beat_sends_each_own_interval_its_refresh_when_its_slot_turns(
    beat: tuple[WarmStartScheduler, Sent, ManualClock],
) -> None:
    scheduler, sent, clock = beat
    wiring = scheduler.wiring()
    wiring.registry.add({"SOL-EUR": ":5", "ADA-EUR": "60:20"})
    scheduler.follow_registry(wiring)
    first = sent.take()
    # The settings' interval is the schedule's entry: not sent here.
    assert sorted((m["name"], m["kwargs"]["interval"]) for m in first) == [  # type: ignore[index]
        (REFRESH_ALL_TASK, 5),
        (REFRESH_ALL_TASK, 20),
    ]
    five = next(m for m in first if m["kwargs"]["interval"] == 5)  # type: ignore[index]
    assert five["kwargs"] == {"not_after": 1_005.0, "interval": 5}
    assert five["expires"] == 5 + CLOCK_SKEW_ALLOWANCE_SECONDS
    clock.advance(4.9)  # still slot 200 of the 5 s interval
    scheduler.follow_registry(wiring)
    assert sent.take() == []
    clock.advance(0.1)
    scheduler.follow_registry(wiring)
    assert [m["kwargs"]["interval"] for m in sent.take()] == [5]  # type: ignore[index]


def test_beat_refreshes_pairs_just_added_at_once_in_batches(
    beat: tuple[WarmStartScheduler, Sent, ManualClock], settings: Settings
) -> None:
    scheduler, sent, clock = beat
    wiring = scheduler.wiring()
    scheduler.follow_registry(wiring)  # the first look: the schedule's warm start covers it
    assert sent.take() == []
    added = [f"P{i:03d}-EUR" for i in range(settings.refresh_batch_size + 1)]
    wiring.registry.add(dict.fromkeys(added, ""))
    wiring.registry.remove(["ETH-EUR"])
    scheduler.follow_registry(wiring)
    batches = sent.take()
    assert [m["name"] for m in batches] == [REFRESH_BATCH_TASK, REFRESH_BATCH_TASK]
    assert [pair for m in batches for pair in m["args"][0]] == added  # type: ignore[index]
    assert batches[0]["kwargs"] == {"not_after": 1_000.0 + settings.refresh_interval_seconds}
    assert batches[0]["expires"] == settings.refresh_interval_seconds + CLOCK_SKEW_ALLOWANCE_SECONDS
    scheduler.follow_registry(wiring)  # nothing new since
    assert sent.take() == []


def test_beat_leaves_pairs_just_added_to_their_first_request_unless_precompute_all(
    beat: tuple[WarmStartScheduler, Sent, ManualClock], settings: Settings
) -> None:
    scheduler, sent, _ = beat
    scheduler.app.settings = dataclasses.replace(settings, precompute="asked")
    wiring = scheduler.wiring()
    scheduler.follow_registry(wiring)
    wiring.registry.add({"SOL-EUR": ""})
    scheduler.follow_registry(wiring)
    assert sent.take() == []


def test_refresh_all_fans_out_the_pairs_of_its_interval_once_per_slot(
    wiring: Wiring, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from worker import tasks

    clock = ManualClock(now=1_000.0)
    process = dataclasses.replace(wiring, clock=clock)
    _seeded(process, {"SOL-EUR": ":5", "ADA-EUR": ":5"})
    app = create_celery(dataclasses.replace(settings, worker_concurrency=1))
    app.loader.import_default_modules()
    monkeypatch.setattr(tasks, "process_wiring", lambda _settings: process)
    batches_sent: list[tuple[object, dict[str, object]]] = []

    def apply_async(args: object = None, kwargs: object = None, **options: object) -> None:
        batches_sent.append((args, {"kwargs": kwargs, **options}))

    monkeypatch.setattr(app.tasks[REFRESH_BATCH_TASK], "apply_async", apply_async)
    refresh_all = app.tasks[REFRESH_ALL_TASK]
    assert refresh_all.run(not_after=1_005.0, interval=5.0) == 1
    [(args, options)] = batches_sent
    assert args == [["ADA-EUR", "SOL-EUR"]]
    assert options == {
        "kwargs": {"not_after": 1_005.0},
        "expires": 5 + CLOCK_SKEW_ALLOWANCE_SECONDS,
    }
    assert refresh_all.run(not_after=1_005.0, interval=5.0) == 0  # the slot is taken
    # The settings' interval has a slot of its own, and its own pairs.
    assert refresh_all.run(not_after=1_010.0) == 1
    assert batches_sent[-1][0] == [sorted(settings.pairs)]
    clock.advance(10)  # sent for an interval gone by: dropped
    assert refresh_all.run(not_after=1_005.0, interval=5.0) == 0
    assert len(batches_sent) == 2


def test_beat_goes_on_when_the_broker_refuses_the_registry_s_refreshes(
    beat: tuple[WarmStartScheduler, Sent, ManualClock],
    redis_client: fakeredis.FakeRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    scheduler, _, _ = beat

    def broker_down(*args: object, **kwargs: object) -> None:
        raise OperationalError("Error 111 connecting to the broker")

    scheduler.app.send_task = broker_down
    for entry in scheduler.schedule.values():  # nothing of the schedule's own is due
        entry.last_run_at = scheduler.app.now()
    scheduler.wiring().registry.add({"SOL-EUR": ":5"})  # its refresh is due at once
    assert scheduler.tick() <= 1.0
    assert "could not send refreshes for the pair registry" in caplog.text
    assert redis_client.exists(beat_tick_key())  # and its heartbeat is still written
