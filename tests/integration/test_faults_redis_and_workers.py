"""Faults injected into the real system: Redis killed or frozen, workers and beat killed.

Each test states its acceptance bar in its docstring. The system runs with the test
settings of conftest.py (TTL 4 s, a refresh every second), overridden per test where
the fault needs it; every wait polls with a deadline, and a fault is only held (slept)
for its stated duration.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime

import orjson
import pytest
import redis

from predictions.cache.store import PredictionStore
from predictions.infra.keys import compute_lock_key
from predictions.model.market_data import build_market_data
from predictions.model.prediction import parse_time
from predictions.model.predictor import Predictor
from predictions.settings import Settings
from predictions.wiring import make_redis
from tests.harness.doubles import CountingModel, HostClock
from tests.harness.faults import (
    ANSWER_WITHIN,
    FRESHNESS_BOUND,
    FreshnessMonitor,
    LoadGenerator,
    LogCursor,
    check_answers,
    children,
    frozen,
    killed,
    process_tree,
    summary,
    wchan,
)
from tests.harness.http import get, log_records
from tests.harness.processes import Process, ProcessFactory, RedisServer, wait_for
from tests.harness.store import cached, stored
from tests.harness.system import PAIRS, TEST_MODEL_LATENCY, TEST_REFRESH, TEST_TTL, TEST_VERSION

pytestmark = [pytest.mark.integration, pytest.mark.faults]

FAULT_SECONDS = 10  # how long Redis stays dead or frozen
# After a fault ends, every pair is a HIT again within one refresh interval plus this.
RECOVERY_SECONDS = TEST_REFRESH + 10


# --- what Redis holds ----------------------------------------------------------------


def all_cached(redis_server: RedisServer) -> bool:
    return cached(redis_server.client())


def refreshed_since(redis_server: RedisServer, moment: float) -> bool:
    """Has every pair been computed after ``moment`` (Unix time)?"""
    client = redis_server.client()
    found = {pair: stored(client, pair) for pair in PAIRS}
    return all(
        entry is not None and parse_time(entry["computed_at"], pair) > moment
        for pair, entry in found.items()
    )


def all_hits(api: Process) -> bool:
    return all(get(api, f"/predict/{pair}").headers.get("X-Cache") == "HIT" for pair in PAIRS)


# --- Redis killed or frozen under load -------------------------------------------------


def run_redis_fault(
    start: ProcessFactory,
    redis_server: RedisServer,
    fault: Callable[[RedisServer], AbstractContextManager[None]],
) -> None:
    """Hold a Redis fault for FAULT_SECONDS under ~100 requests/s; check the bar."""
    worker = start("worker")
    beat = start("beat")
    wait_for(lambda: all_cached(redis_server), 30, what="every pair cached by the worker")
    api = start("api")
    wait_for(lambda: all_hits(api), 10, what="every pair a HIT before the fault")
    before = process_tree(api, worker, beat)

    with LoadGenerator(api) as load:
        wait_for(lambda: len(load.since(0)) >= 100, 10, what="load running")
        fault_began = time.monotonic()
        with fault(redis_server):
            time.sleep(FAULT_SECONDS)  # the fault's stated duration
        restored = time.monotonic()
        restored_at = time.time()
        worker_log = LogCursor(worker)
        wait_for(lambda: all_hits(api), RECOVERY_SECONDS, what="every pair a HIT again")
        recovered = time.monotonic() - restored
        # The worker refreshes again, too: every pair recomputed after the fault, and
        # by the worker (the API's misses may have been first).
        wait_for(
            lambda: (
                refreshed_since(redis_server, restored_at)
                and re.search(r"refreshed pairs=\d+ written=[1-9]", worker_log.text())
            ),
            RECOVERY_SECONDS,
            what="the worker refreshing again",
        )
        worker_back = time.monotonic() - restored
        time.sleep(1)  # a little load after recovery, too

    during = load.since(fault_began, restored)
    print(
        f"{fault.__name__}: {len(load.samples)} requests, during the fault {summary(during)}, "
        f"all HIT again after {recovered:.1f} s, worker refreshing after {worker_back:.1f} s, "
        f"slowest answer {max(s.seconds for s in load.samples):.3f} s"
    )
    check_answers(load.samples)
    # About 100 requests/s were offered during the fault, and it did reach the API.
    assert len(during) >= 0.7 * 100 * FAULT_SECONDS, summary(during)
    assert {s.cache for s in during} - {"HIT"}, "the fault never showed"
    assert "WORKER TIMEOUT" not in api.output()
    assert all(p.running() for p in (api, worker, beat))
    assert process_tree(api, worker, beat) == before, "a process was restarted"


@pytest.mark.serial  # latency bounds: run alone, after the rest
def test_redis_killed_for_ten_seconds_under_load(
    start: ProcessFactory, redis_server: RedisServer
) -> None:
    """Redis SIGKILLed for 10 s, then restarted empty on the same port, under ~100 req/s.

    Every request is answered within 2 s, with 200 (HIT, MISS or a marked STALE) or a
    503 with Retry-After, never a 500; gunicorn kills no worker; every pair is a HIT
    again within a refresh interval plus 10 s, and no process was restarted.
    """
    run_redis_fault(start, redis_server, killed)


@pytest.mark.serial  # latency bounds: run alone, after the rest
def test_redis_frozen_for_ten_seconds_under_load(
    start: ProcessFactory, redis_server: RedisServer
) -> None:
    """Redis SIGSTOPped for 10 s, then SIGCONT: the same bar as a killed Redis.

    A frozen server accepts connections and never answers, so only timeouts bound a
    call: this is the fault that client defaults get wrong (see the next test).
    """
    run_redis_fault(start, redis_server, frozen)


@pytest.mark.serial  # latency bounds: run alone, after the rest
def test_a_frozen_redis_blocks_default_clients_but_not_make_redis(
    redis_server: RedisServer,
) -> None:
    """Why make_redis sets every timeout: redis-py's defaults wait on a frozen server."""
    default = redis.Redis(port=redis_server.port)
    ours = make_redis(Settings(redis_url=redis_server.url), client_name="fault-test")
    assert default.ping() and ours.ping()  # both connected before the freeze
    finished = threading.Event()

    def default_get() -> None:
        try:
            default.get("anything")
        except redis.RedisError:
            pass
        finished.set()

    blocked = threading.Thread(target=default_get, daemon=True)
    with frozen(redis_server):
        started = time.monotonic()
        blocked.start()
        with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
            ours.get("anything")
        ours_seconds = time.monotonic() - started
        # Bounded: it only has to be still waiting well past an acceptable answer.
        still_blocked = not finished.wait(started + 3.0 - time.monotonic())
    blocked.join(10)  # answered once Redis runs again
    default.close()
    ours.close()
    print(f"make_redis failed after {ours_seconds:.2f} s; the default client still waited")
    assert ours_seconds < 1.0
    assert still_blocked, "redis-py's default client gave up on a frozen Redis"
    assert finished.is_set()


def test_a_write_lost_in_a_frozen_redis_does_not_come_back_expired(
    redis_server: RedisServer,
) -> None:
    """A write that timed out on a frozen Redis still runs when it thaws (it waited in
    the socket buffers); the store must not then serve that prediction past its expiry.

    This is how the frozen-Redis test above can see HITs that expired seconds earlier:
    the worker's write of a one-second TTL lands ten seconds late, with its relative PX.
    """
    store = PredictionStore(
        make_redis(Settings(redis_url=redis_server.url), client_name="fault-test"),
        clock=HostClock(),
    )
    predictor = Predictor(
        CountingModel(),
        build_market_data("synthetic", 5, HostClock()),
        300,
        ttl_seconds=1,
        clock=HostClock(),
    )
    prediction = predictor.compute("ETH-EUR")
    assert store.redis.ping()
    with frozen(redis_server):
        with pytest.raises((redis.TimeoutError, redis.ConnectionError)):
            store.write(prediction, time.time())
        time.sleep(max(0.0, prediction.fresh_until + 0.5 - time.time()))  # past its expiry
    # Watch for as long as the late write could keep the key: it is never served.
    watch_until = time.monotonic() + 1.5
    while time.monotonic() < watch_until:
        found = store.read_version("ETH-EUR", prediction.model_version)
        assert found is None, f"served {time.time() - found.fresh_until:.2f} s after expiry"
        time.sleep(0.05)


# --- Celery pool process and worker killed --------------------------------------------


def busy_pool_process(worker: Process) -> int | None:
    """A pool process in the middle of a refresh: asleep in the model's latency."""
    for pid in children(worker.pid):
        if wchan(pid) == "hrtimer_nanosleep":
            return pid
    return None


# Ages judged to the second against FRESHNESS_BOUND, from a new worker's first refresh on:
# run alone (`make test`'s serial pass), where no neighbour slows that refresh.
@pytest.mark.serial
def test_killed_pool_process_and_worker_keep_predictions_fresh(
    start: ProcessFactory, redis_server: RedisServer
) -> None:
    """A pool process SIGKILLed mid-refresh, then the whole worker: predictions stay fresh.

    The refresh the pool process was running is redone (every pair gets a newer
    computed_at); sampled every 100 ms, no pair is ever absent from Redis or has a
    newest prediction older than two refresh intervals plus the TTL. After the whole
    worker is killed (mid-refresh too) and a new one started, the same bound holds again
    from the new worker's first refresh on, and no pair is absent once it had two
    intervals to refresh.
    """
    latency = {"SIMULATED_MODEL_LATENCY_SECONDS": "0.5"}
    worker = start("worker", **latency)
    start("beat", **latency)
    wait_for(lambda: all_cached(redis_server), 30, what="every pair cached by the worker")
    client = redis_server.client()

    with FreshnessMonitor(redis_server) as monitor:
        log = LogCursor(worker)
        victim = wait_for(lambda: busy_pool_process(worker), 10, what="a refresh running")
        # It holds a pair's compute lock: the refresh really is in progress.
        assert any(client.exists(compute_lock_key(pair, TEST_VERSION)) for pair in PAIRS)
        os.kill(victim, signal.SIGKILL)  # type: ignore[arg-type]
        pool_killed_at = time.time()
        wait_for(lambda: "WorkerLostError" in log.text(), 10, what="the worker saw the loss")
        assert f"pid:{victim} exited with 'signal 9 (SIGKILL)'" in log.text()
        # Redone (the bound itself is checked on the samples below).
        wait_for(
            lambda: refreshed_since(redis_server, pool_killed_at),
            2 * FRESHNESS_BOUND,
            what="every pair refreshed after the kill",
        )
        time.sleep(TEST_TTL)  # observe a TTL more: no pair goes cold later

        wait_for(lambda: busy_pool_process(worker), 10, what="a refresh running")
        os.killpg(worker.pid, signal.SIGKILL)  # the main process and its pool at once
        worker_killed_at = time.time()
        replacement = start("worker", name="worker-2", **latency)
        wait_for(lambda: "ready." in replacement.output(), 30, what="the new worker ready")
        ready_at = time.time()
        wait_for(
            lambda: refreshed_since(redis_server, ready_at),
            2 * FRESHNESS_BOUND,
            what="every pair refreshed by the new worker",
        )
        time.sleep(TEST_TTL)  # observe a TTL with the new worker
    print(
        f"{len(monitor.samples)} samples; oldest prediction after the pool kill "
        f"{monitor.oldest(pool_killed_at, worker_killed_at):.2f} s, after the worker kill "
        f"{monitor.oldest(worker_killed_at):.2f} s (bound {FRESHNESS_BOUND} s); new worker "
        f"ready {ready_at - worker_killed_at:.1f} s after the kill"
    )
    assert len(monitor.samples) > 100 * len(PAIRS)
    after_pool_kill = monitor.absent(pool_killed_at, worker_killed_at)
    assert not after_pool_kill, f"absent after the pool kill: {after_pool_kill[:5]}"
    with_the_pool_killed = monitor.too_old(pool_killed_at, worker_killed_at)
    assert not with_the_pool_killed, with_the_pool_killed[:5]
    # While no worker runs, predictions age; the bound holds again once the new one
    # has run its first refresh.
    afterwards = monitor.too_old(ready_at + TEST_REFRESH)
    assert not afterwards, afterwards[:5]
    new_worker_refreshed = ready_at + 2 * TEST_REFRESH
    assert not monitor.absent(new_worker_refreshed), monitor.absent(new_worker_refreshed)[:5]


# --- beat and worker stopped ------------------------------------------------------------

REFRESH_ALL_MESSAGE = re.compile(
    r"Task predictions\.refresh_all\[[0-9a-f-]+\] (received|succeeded in \S+: (\d+))"
)


def refresh_alls(text: str, event: str) -> list[datetime]:
    """When the worker "received", ran ("succeeded") or ran and "fanned out" (not skipped
    as already done in its interval) each predictions.refresh_all task, by Celery's log
    lines (JSON objects under LOG_FORMAT=json)."""
    found = []
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        record = orjson.loads(line)
        match = REFRESH_ALL_MESSAGE.search(str(record.get("message", "")))
        if match is None:
            continue
        kind, batches = match.groups()
        kinds = {kind.split()[0]} | ({"fanned out"} if batches and int(batches) else set())
        if event in kinds:
            found.append(datetime.fromisoformat(record["time"]))
    return found


def first_seconds(times: list[datetime], window: float) -> list[datetime]:
    """The times within ``window`` seconds of the first one."""
    return [t for t in times if (t - times[0]).total_seconds() <= window]


def test_beat_stopped_longer_than_the_ttl(start: ProcessFactory, redis_server: RedisServer) -> None:
    """Beat stopped for two TTLs: the API answers at once, stale pairs recomputed in the
    background about once per TTL; beat restarted: about one refresh per interval, no
    burst of replayed ones."""
    worker = start("worker")
    beat = start("beat")
    wait_for(lambda: all_cached(redis_server), 30, what="every pair cached by the worker")
    api = start("api")
    assert api.count("computed prediction") == 0

    beat.stop()
    answers: list[tuple[int, str | None, float]] = []
    outage_ends = time.monotonic() + 2 * TEST_TTL
    while time.monotonic() < outage_ends:
        for pair in PAIRS:
            started = time.monotonic()
            response = get(api, f"/predict/{pair}")
            answers.append(
                (response.status, response.headers.get("X-Cache"), time.monotonic() - started)
            )
        time.sleep(0.02)  # pacing, as a client would
    assert {status for status, _, _ in answers} == {200}
    assert max(seconds for _, _, seconds in answers) < ANSWER_WITHIN
    computed: dict[str, list[datetime]] = {}
    for record in log_records(api):
        if str(record["message"]).startswith("computed prediction "):
            computed.setdefault(record["pair"], []).append(datetime.fromisoformat(record["time"]))
    # With no refreshes, every pair went stale and was recomputed by the API, in the
    # background: no request waited for the model ...
    assert sorted(computed) == sorted(PAIRS), computed
    assert "MISS" not in {cache for _, cache, _ in answers}
    assert "HIT" in {cache for _, cache, _ in answers}
    # ... about once per TTL: never long before the previous one's freshness ended
    # (XFetch may start a refresh a few model latencies early, never sooner).
    for pair, times in computed.items():
        gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
        assert all(gap >= TEST_TTL - 10 * TEST_MODEL_LATENCY for gap in gaps), (pair, gaps)

    log = LogCursor(worker)
    start("beat", name="beat-2")
    wait_for(lambda: refresh_alls(log.text(), "fanned out"), 15, what="a refresh")
    window = 5 * TEST_REFRESH
    time.sleep(window)  # the measuring window
    received = first_seconds(refresh_alls(log.text(), "received"), window)
    fanned_out = first_seconds(refresh_alls(log.text(), "fanned out"), window)
    print(
        f"beat restarted: {len(received)} refreshes sent, {len(fanned_out)} run in its "
        f"first {window:g} s"
    )
    # One at start-up, then one per interval: no backlog.
    assert len(received) <= window / TEST_REFRESH + 2, received
    assert 1 <= len(fanned_out) <= window / TEST_REFRESH + 1, fanned_out
    assert "Discarding revoked task" not in log.text()


def test_worker_stopped_its_expired_refreshes_are_dropped(
    start: ProcessFactory, redis_server: RedisServer
) -> None:
    """The worker stopped for six intervals while beat sends: the new worker drops the
    refreshes sent for intervals gone by (their ``not_after``, by Redis's clock) and
    runs about one per interval afterwards."""
    worker = start("worker")
    beat = start("beat")
    wait_for(lambda: all_cached(redis_server), 30, what="every pair cached by the worker")

    beat_log = LogCursor(beat)
    worker.stop()
    outage = 6 * TEST_REFRESH
    time.sleep(outage)  # the fault's stated duration
    replacement = start("worker", name="worker-2")
    wait_for(lambda: "ready." in replacement.output(), 30, what="the new worker ready")
    # Sent with no worker to run them (beat kept going while the new one started).
    queued = beat_log.count("Sending due task refresh-all-predictions")
    assert queued >= outage / TEST_REFRESH - 1
    wait_for(lambda: refresh_alls(replacement.output(), "fanned out"), 10, what="a refresh")
    window = 5 * TEST_REFRESH
    time.sleep(window)  # the measuring window
    text = replacement.output()
    # Dropped by the task itself (its deadline passed), or by Celery (its expiry).
    discarded = text.count('refresh dropped: sent for an interval gone by"') + text.count(
        "Discarding revoked task: predictions.refresh_all["
    )
    run = first_seconds(refresh_alls(text, "succeeded"), window)
    fanned_out = first_seconds(refresh_alls(text, "fanned out"), window)
    print(
        f"worker restarted: {discarded} expired refreshes discarded of {queued} sent "
        f"while it was down; {len(run)} run, {len(fanned_out)} fanned out in its "
        f"first {window:g} s"
    )
    # Everything beat sent during the outage, but the last one or two (which the new
    # worker may receive in time), was dropped without refreshing anything.
    assert discarded >= queued - 2
    # Then about one per interval: only one per interval refreshes (the others were
    # dropped, or find their interval claimed).
    assert 1 <= len(fanned_out) <= window / TEST_REFRESH + 1, fanned_out
    wait_for(lambda: all_cached(redis_server), 10, what="every pair cached again")
