"""Faults under load and in the data: two beats, a stampede, a broken model, corrupt
entries and a Redis short of memory, each against the real processes."""

from __future__ import annotations

import selectors
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from predictions.cache.store import PredictionStore
from predictions.infra.keys import active_version_key, prediction_key
from predictions.model.prediction import PREDICTION_FIELDS, Prediction
from tests.harness import load
from tests.harness.doubles import HostClock
from tests.harness.fault_models import PairFaultModel
from tests.harness.faults import Hammer
from tests.harness.http import Answer, computations, get
from tests.harness.processes import Process, ProcessFactory, RedisServer, wait_for
from tests.harness.store import cached, stored
from tests.harness.system import PAIRS, TEST_GRACE, TEST_TTL, TEST_VERSION

pytestmark = [pytest.mark.integration, pytest.mark.faults]

# --- 5. Two beats by mistake: still one refresh per pair per interval ----------------

SENT = "Sending due task refresh-all-predictions"


def finished_refresh_alls(worker: Process) -> int:
    """refresh_all tasks the worker ran, or dropped as expired."""
    return sum(
        "predictions.refresh_all[" in line and ("succeeded" in line or "Discarding" in line)
        for line in worker.output().splitlines()
    )


def test_two_beats_refresh_each_pair_once_per_interval(
    start: ProcessFactory, redis_server: RedisServer
) -> None:
    # A near-instant model: with TEST_MODEL_LATENCY, two fan-outs less than that far
    # apart would also be collapsed by the per-pair compute locks, hiding whether the
    # refresh slot works. Here only the slot can stop the second beat's refresh.
    env = {"SIMULATED_MODEL_LATENCY_SECONDS": "0.02"}
    worker = start("worker", **env)
    beat_a = start("beat", name="beat-a", **env)
    wait_for(lambda: cached(redis_server.client()), 30, what="every pair cached")
    beat_b = start("beat", name="beat-b", **env)
    wait_for(lambda: beat_b.count(SENT) >= 1, 30, what="the second beat sending")

    intervals = 8
    before = {pair: computations(worker, pair) for pair in PAIRS}
    skipped_before = worker.count("refresh skipped")
    finished_before = finished_refresh_alls(worker)
    sent_before = beat_a.count(SENT), beat_b.count(SENT)
    wait_for(
        lambda: (
            beat_a.count(SENT) >= sent_before[0] + intervals
            and beat_b.count(SENT) >= sent_before[1] + intervals
        ),
        intervals + 15,
        what=f"both beats sending {intervals} more refreshes",
    )
    # Both beats' refreshes reached the worker, which ran (or skipped) them.
    wait_for(
        lambda: finished_refresh_alls(worker) >= finished_before + 2 * intervals,
        15,
        what="the worker running both beats' refreshes",
    )
    skipped = worker.count("refresh skipped") - skipped_before
    computed = {pair: computations(worker, pair) - before[pair] for pair in PAIRS}
    # Once per interval, give or take the refresh in flight at either end; not twice.
    for pair, count in computed.items():
        assert intervals - 2 <= count <= intervals + 2, (pair, computed, skipped)
    # What kept it to once: one of each interval's two refreshes was skipped.
    assert intervals - 2 <= skipped <= intervals + 2, skipped


# --- 6. A stampede of cold misses, while a warm pair keeps being served ---------------


def burst(api: Process, paths: list[str]) -> list[Answer]:
    """Send every request at once, and time each answer as it arrives.

    One thread and raw sockets: 160 client threads would contend for the GIL (and for
    this machine's two cores) with the API, and time themselves more than the API.
    """
    host, port = api.env["API_BIND"].rsplit(":", 1)
    selector = selectors.DefaultSelector()
    started: list[float] = []
    received: list[bytearray] = []
    arrived: dict[int, float] = {}
    for index, path in enumerate(paths):
        sock = socket.create_connection((host, int(port)), timeout=15)
        started.append(time.monotonic())
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        received.append(bytearray())
        selector.register(sock, selectors.EVENT_READ, index)
    deadline = time.monotonic() + 15
    while len(arrived) < len(paths):
        assert time.monotonic() < deadline, f"{len(paths) - len(arrived)} answers missing"
        for key, _ in selector.select(timeout=1):
            ready, index = key.fileobj, key.data
            assert isinstance(ready, socket.socket)
            chunk = ready.recv(65536)
            if chunk:
                received[index] += chunk
            else:  # Connection: close, so the end of the answer
                arrived[index] = time.monotonic()
                selector.unregister(ready)
                ready.close()
    selector.close()
    answers = []
    for index, raw in enumerate(received):
        head, _, body = bytes(raw).partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines)
        seconds = arrived[index] - started[index]
        answers.append(
            Answer(
                int(status_line.split()[1]), headers, orjson.loads(body), seconds, started[index]
            )
        )
    return answers


STAMPEDE_PAIRS = ["ETH-EUR", "BTC-EUR", "ETH-USD", "BTC-USD"]
WARM_PAIR = "SOL-EUR"


MODEL_LATENCY = 1.0


@pytest.mark.serial  # a p99 bound: run alone, after the rest
def test_stampede_computes_each_pair_once_answers_everyone_and_hits_stay_fast(
    start: ProcessFactory,
) -> None:
    api = start(
        "api",
        PAIRS=",".join([*STAMPEDE_PAIRS, WARM_PAIR]),
        API_WORKERS="2",
        SIMULATED_MODEL_LATENCY_SECONDS=str(MODEL_LATENCY),
        # As many computations as stampeding pairs: only the compute lock can then keep
        # two requests from computing one pair.
        MAX_CONCURRENT_COMPUTES="4",
        # No refresh runs here: a TTL longer than the test keeps the warm pair warm.
        PREDICTION_TTL_SECONDS="120",
        REFRESH_INTERVAL_SECONDS="40",
        # Every hit reads Redis, so the hits below measure Redis under the stampede's
        # lock polling, not the API's in-process copy.
        NEAR_CACHE_SECONDS="0",
    )
    assert get(api, f"/predict/{WARM_PAIR}").status == 200
    paths = [f"/predict/{pair}" for pair in STAMPEDE_PAIRS] * 40

    port = int(api.env["API_BIND"].rsplit(":", 1)[1])
    # The latency of warm hits is measured from a process of its own: the burst's 160
    # client threads here would otherwise be timed along with the API.
    with (
        load.probing(port, seconds=4, path=f"/predict/{WARM_PAIR}") as probe,
        Hammer(api, [f"/predict/{WARM_PAIR}"]) as hammer,
    ):
        wait_for(lambda: len(hammer.answers) >= 20, 10, what="warm hits flowing")
        answers = burst(api, paths)
    assert not hammer.errors, hammer.errors
    stampede_started = min(a.started for a in answers)
    stampede_ended = max(a.started + a.seconds for a in answers)

    # Everyone answered, none turned away: waiting costs a greenlet, not a thread.
    assert {a.status for a in answers} == {200}
    for path, answer in zip(paths, answers, strict=True):
        assert answer.headers["X-Cache"] in {"MISS", "HIT"}
        assert set(answer.body) == PREDICTION_FIELDS and path.endswith(answer.body["pair"])
        assert answer.seconds < MODEL_LATENCY + 2.0, (path, answer.seconds)
    for pair in STAMPEDE_PAIRS:
        times = {a.body["computed_at"] for a in answers if a.body["pair"] == pair}
        assert len(times) == 1, (pair, times)
        assert computations(api, pair) == 1, pair
    assert computations(api, WARM_PAIR) == 1  # the warm-up, never again

    during = [a for a in hammer.answers if stampede_started <= a.started <= stampede_ended]
    assert len(during) >= 20, len(during)
    assert {(a.status, a.headers["X-Cache"]) for a in during} == {(200, "HIT")}
    assert set(probe["statuses"]) == {200}
    p99 = load.percentile(probe["latencies"], 99)
    assert p99 < 0.05, f"p99 of warm hits around the stampede: {p99 * 1000:.1f} ms"


# --- 7. A model that fails for some pairs -------------------------------------------

# Each failing pair shares a refresh batch with a healthy one (4 pool processes, so
# batches of two in this order): a failure must not cost its neighbour its refresh.
FAULT_PAIRS = ["ETH-EUR", "SOL-EUR", "BTC-EUR", "SOL-USD", "ETH-USD", "BTC-USD"]
FAULTS = {"ETH-EUR": "raise", "BTC-EUR": "nan", "ETH-USD": "inf", "BTC-USD": "negative"}
HEALTHY = [pair for pair in FAULT_PAIRS if pair not in FAULTS]
FAULTY = PairFaultModel.version
STALE_GRACE = 2.0


def test_a_failing_model_writes_nothing_for_its_pairs_and_the_rest_stay_fresh(
    start: ProcessFactory, redis_server: RedisServer
) -> None:
    env = {
        "PAIRS": ",".join(FAULT_PAIRS),
        "MODEL": "tests.harness.fault_models:PairFaultModel",
        "FAULTS": ",".join(f"{pair}={fault}" for pair, fault in FAULTS.items()),
        "STALE_GRACE_SECONDS": str(STALE_GRACE),
        # One API process that reads Redis on every request: the stale answer below
        # comes from the process that served the pair, and no near copy hides a miss.
        "API_WORKERS": "1",
        "NEAR_CACHE_SECONDS": "0",
    }
    worker = start("worker", **env)
    start("beat", **env)
    client = redis_server.client()

    # The healthy pairs are refreshed again and again; the failing ones never written.
    seen: dict[str, set[str]] = {pair: set() for pair in HEALTHY}
    deadline = time.monotonic() + 30
    while min(len(times) for times in seen.values()) < 3:
        assert time.monotonic() < deadline, f"healthy pairs not refreshed: {seen}"
        for pair in FAULTS:
            assert not client.exists(prediction_key(pair, FAULTY)), pair
        for pair in HEALTHY:
            entry = stored(redis_server.client(), pair, FAULTY)
            if entry is not None:
                seen[pair].add(entry["computed_at"])
        time.sleep(0.05)
    for pair in FAULTS:
        assert worker.count(f"prediction failed pair={pair} ") >= 2, pair
        assert not client.exists(prediction_key(pair, FAULTY)), pair

    api = start("api", **env)
    for pair in FAULTS:
        answer = get(api, f"/predict/{pair}")
        assert answer.status == 503, (pair, answer.body)
        assert answer.body["error"]["code"] == "prediction_failed"
        assert answer.headers["Retry-After"] == "1"
        assert api.count(f"prediction failed pair={pair} ") == 1
        assert not client.exists(prediction_key(pair, FAULTY)), pair
    for pair in HEALTHY:
        assert get(api, f"/predict/{pair}").status == 200

    # A prediction the model made before it broke, served while it is fresh, then stale
    # within the grace period, then an error: never a price older than the grace.
    pair = "ETH-EUR"
    assert pair in FAULTS
    now = time.time()
    previous = Prediction(
        pair=pair,
        predicted_price=3000.0,
        horizon_seconds=300,
        computed_at=round(now, 3),
        fresh_until=round(now + 1.5, 3),
        model_version=FAULTY,
        data_source="synthetic",
        compute_seconds=0.3,
    )
    assert PredictionStore(client, grace_seconds=STALE_GRACE, clock=HostClock()).write(
        previous, now
    )
    answer = get(api, f"/predict/{pair}")
    assert (answer.status, answer.headers["X-Cache"]) == (200, "HIT")
    time.sleep(max(0.0, previous.fresh_until - time.time()) + 0.05)
    answer = get(api, f"/predict/{pair}")
    assert (answer.status, answer.headers["X-Cache"]) == (200, "STALE"), answer.body
    assert answer.body["stale"] is True
    assert answer.body["model_version"] == FAULTY
    assert answer.body["computed_at"] == previous.to_dict()["computed_at"]
    wait_for(lambda: get(api, f"/predict/{pair}").status == 503, 10, what="stale grace running out")
    assert time.time() >= previous.fresh_until + STALE_GRACE - 0.1
    assert get(api, f"/predict/{pair}").body["error"]["code"] == "prediction_failed"
    assert not client.exists(prediction_key(pair, FAULTY))
    assert "unhandled error" not in api.output()


# --- 8. Corrupt entries in Redis ----------------------------------------------------

CORRUPT_PAIRS = [
    "ETH-EUR",
    "BTC-EUR",
    "ETH-USD",
    "BTC-USD",
    "SOL-EUR",
    "SOL-USD",
    "LTC-EUR",
    "LTC-USD",
    "XRP-EUR",
    "XRP-USD",
    "ADA-EUR",
    "ADA-USD",
]


def valid_entry(pair: str, **changes: Any) -> bytes:
    """What the service would store for ``pair``, with some fields changed."""
    now = time.time()
    entry = Prediction(
        pair=pair,
        predicted_price=100.0,
        horizon_seconds=300,
        computed_at=now,
        fresh_until=now + 60,
        model_version="log-linear-trend-1",
        data_source="synthetic",
        compute_seconds=0.3,
    ).to_dict()
    return orjson.dumps(entry | changes)


Corruption = Callable[[Any, str], object]

CORRUPTIONS: dict[str, Corruption] = {
    "not JSON": lambda r, key: r.set(key, b"{not json", ex=60),
    "wrong schema": lambda r, key: r.set(key, b'{"price": 1, "when": "now"}', ex=60),
    "missing field": lambda r, key: r.set(
        key, orjson.dumps({k: v for k, v in orjson.loads(valid_entry("X")).items() if k != "pair"})
    ),
    "another pair's entry": lambda r, key: r.set(key, valid_entry("BTC-GBP"), ex=60),
    "NaN literal": lambda r, key: r.set(
        key, valid_entry(key.split(":")[-1]).replace(b"100.0", b"NaN"), ex=60
    ),
    "negative price": lambda r, key: r.set(
        key, valid_entry(key.split(":")[-1], predicted_price=-5.0), ex=60
    ),
    "a hash": lambda r, key: r.hset(key, mapping={"pair": key, "predicted_price": "1"}),
    "a list": lambda r, key: r.rpush(key, b"1", b"2"),
    "an empty string": lambda r, key: r.set(key, b""),
    "JSON null": lambda r, key: r.set(key, b"null"),
    "a JSON array": lambda r, key: r.set(key, b"[1, 2, 3]", ex=60),
    # Thousands of times a prediction's size: read within the 0.3 s socket timeout.
    "8 MiB of binary garbage": lambda r, key: r.set(key, bytes(range(256)) * 32768, ex=60),
}


def test_corrupt_entries_are_recomputed_on_request_never_a_500(
    start: ProcessFactory, redis_server: RedisServer
) -> None:
    api = start("api", PAIRS=",".join(CORRUPT_PAIRS))
    client = redis_server.client()
    cases = dict(zip(CORRUPT_PAIRS, CORRUPTIONS.items(), strict=True))
    client.set(active_version_key(), TEST_VERSION)
    for pair, (_, corrupt) in cases.items():
        corrupt(client, prediction_key(pair, TEST_VERSION))
    assert len(client.keys(prediction_key("*", TEST_VERSION))) == len(cases)

    for pair, (what, _) in cases.items():
        answer = get(api, f"/predict/{pair}")
        assert (answer.status, answer.headers.get("X-Cache")) == (200, "MISS"), (what, answer)
        assert set(answer.body) == PREDICTION_FIELDS and answer.body["pair"] == pair, what
        assert answer.body["predicted_price"] > 0, what
        assert client.type(prediction_key(pair, TEST_VERSION)) == b"string", what
        assert stored(redis_server.client(), pair) == answer.body, what
        # Kept for its freshness and then its grace, no longer.
        assert (
            0 < client.pttl(prediction_key(pair, TEST_VERSION)) <= (TEST_TTL + TEST_GRACE) * 1000
        ), what
        assert computations(api, pair) == 1, what
        again = get(api, f"/predict/{pair}")
        assert (again.status, again.headers["X-Cache"]) == (200, "HIT"), what
    assert "unhandled error" not in api.output()


# --- 10. Redis short of memory: the cache is evicted, the broker never ---------------


def broker_snapshot(broker: Any) -> dict[bytes, bytes]:
    """Every key of the broker's database that has no expiry, with its type."""
    return {key: broker.type(key) for key in broker.keys("*") if broker.pttl(key) == -1}


def evicted_keys(client: Any) -> int:
    return int(client.info("stats")["evicted_keys"])


def test_memory_pressure_evicts_the_cache_never_the_broker_queue(
    start: ProcessFactory, redis_server: RedisServer
) -> None:
    worker = start("worker")
    start("beat")
    api = start("api")
    wait_for(lambda: cached(redis_server.client()), 30, what="every pair cached")
    cache, broker = redis_server.client(0), redis_server.client(1)
    # The policy the embedded and compose Redis run with (scripts/embedded_redis.py).
    assert cache.config_get("maxmemory-policy")["maxmemory-policy"] == "volatile-lru"
    original_maxmemory = cache.config_get("maxmemory")["maxmemory"]
    assert original_maxmemory is not None
    filler = b"x" * 1024
    filled = 0

    def fill(count: int) -> None:
        nonlocal filled
        pipe = cache.pipeline(transaction=False)
        for index in range(filled, filled + count):
            pipe.set(f"pressure:{index}", filler, ex=300)
        pipe.execute()
        filled += count

    paths = [f"/predict/{pair}" for pair in PAIRS]
    worker.signal(signal.SIGSTOP)  # refreshes pile up in the broker's queue
    try:
        with Hammer(api, paths) as hammer:
            wait_for(lambda: broker.llen("celery") >= 3, 15, what="messages queued")
            before = broker_snapshot(broker)
            assert {b"celery", b"_kombu.binding.celery"} <= set(before), before
            queued = set(broker.lrange("celery", 0, -1))
            evicted_before = evicted_keys(cache)
            cache.config_set("maxmemory", int(cache.info("memory")["used_memory"]) + 4 * 2**20)
            # Several times the headroom, in TTL'd keys as the cache's own are.
            for _ in range(40):
                fill(500)
                after = broker_snapshot(broker)
                assert not before.items() - after.items(), (before, after)
            evicted = evicted_keys(cache) - evicted_before
            assert evicted > 5000, evicted
            assert queued <= set(broker.lrange("celery", 0, -1))

            # The worker resumes: it drains the queue and refreshes every pair into a
            # full cache, each write evicting something else.
            computed_before = {pair: computations(worker, pair) for pair in PAIRS}
            worker.signal(signal.SIGCONT)
            wait_for(
                lambda: (
                    all(computations(worker, p) > computed_before[p] for p in PAIRS)
                    and cached(redis_server.client())
                ),
                30,
                what="the worker refreshing every pair under memory pressure",
            )
            fill(2000)
            assert evicted_keys(cache) - evicted_before > evicted
        assert not hammer.errors, hammer.errors
    finally:
        worker.signal(signal.SIGCONT)
        cache.config_set("maxmemory", original_maxmemory)

    assert broker.exists("_kombu.binding.celery")
    statuses = {answer.status for answer in hammer.answers}
    assert statuses <= {200, 503} and 200 in statuses, statuses
    for answer in hammer.answers:
        if answer.status == 503:
            assert set(answer.body["error"]) == {"status", "code", "message"}
    assert "unhandled error" not in api.output()
