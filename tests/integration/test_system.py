"""The whole system over HTTP: real Redis, real Celery worker and beat, real gunicorn."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest

from predictions.infra.keys import active_version_key, asked_pairs_key, prediction_key
from tests.harness.http import computations, get
from tests.harness.processes import ProcessFactory, RedisServer, wait_for
from tests.harness.store import cached
from tests.harness.system import PAIRS, TEST_GRACE, TEST_REFRESH, TEST_TTL, TEST_VERSION

pytestmark = pytest.mark.integration


def all_cached(redis_server: RedisServer) -> bool:
    return cached(redis_server.client())


def test_beat_and_worker_fill_every_pair_before_any_request(
    start: ProcessFactory, redis_server: RedisServer
) -> None:
    worker = start("worker")
    start("beat")
    wait_for(lambda: all_cached(redis_server), 30, what="every pair cached by the worker")
    api = start("api")
    for pair in PAIRS:
        answer = get(api, f"/predict/{pair}")
        assert answer.status == 200
        assert answer.headers["X-Cache"] == "HIT"
        assert answer.body["pair"] == pair
        assert computations(worker, pair) >= 1
    assert api.count("computed prediction") == 0


def test_over_three_ttls_every_request_is_a_hit(
    start: ProcessFactory, redis_server: RedisServer
) -> None:
    start("worker")
    start("beat")
    wait_for(lambda: all_cached(redis_server), 30, what="every pair cached by the worker")
    api = start("api")
    statuses: dict[str, int] = {}
    computed_at: set[str] = set()
    deadline = time.monotonic() + 3 * TEST_TTL
    while time.monotonic() < deadline:
        for pair in PAIRS:
            answer = get(api, f"/predict/{pair}")
            key = f"{answer.status} {answer.headers.get('X-Cache')}"
            statuses[key] = statuses.get(key, 0) + 1
            computed_at.add(answer.body.get("computed_at", ""))
        time.sleep(0.02)
    assert set(statuses) == {"200 HIT"}, statuses
    assert api.count("computed prediction") == 0
    # The cache was refreshed while we read it, not served from one old write.
    assert len(computed_at) > 3 * TEST_TTL / TEST_REFRESH


def test_forty_concurrent_cold_requests_compute_once(start: ProcessFactory) -> None:
    # As shipped: a burst is never turned away (see also test_serving.py).
    api = start("api")
    with ThreadPoolExecutor(max_workers=40) as pool:
        answers = list(pool.map(lambda _: get(api, "/predict/ETH-EUR"), range(40)))
    assert [a.status for a in answers] == [200] * 40
    # Requests that arrive after the computation landed read it as a HIT.
    assert "MISS" in {a.headers["X-Cache"] for a in answers}
    assert len({a.body["computed_at"] for a in answers}) == 1
    assert computations(api, "ETH-EUR") == 1
    assert get(api, "/predict/ETH-EUR").headers["X-Cache"] == "HIT"


def test_redis_down_is_a_quick_503_and_everything_recovers_without_restarts(
    start: ProcessFactory, redis_server: RedisServer
) -> None:
    worker = start("worker")
    beat = start("beat")
    wait_for(lambda: all_cached(redis_server), 30, what="every pair cached")
    # One API process, so that the pair it served is known to the process answering,
    # with room for one near copy: the pair it served, and none of the others (an API
    # process fills its copies as it starts, and serves those stale too).
    api = start("api", API_WORKERS="1", NEAR_CACHE_MAX_PAIRS="1")
    assert get(api, "/predict/ETH-EUR").status == 200

    redis_server.kill()
    # Within NEAR_CACHE_SECONDS of its last read, the copy still answers as a fresh HIT.
    wait_for(lambda: get(api, "/predict/ETH-EUR").headers.get("X-Cache") != "HIT", 2)
    for _ in range(3):
        # A pair this API has served: its last-known prediction, marked stale.
        answer = get(api, "/predict/ETH-EUR")
        assert (answer.status, answer.headers["X-Cache"]) == (200, "STALE"), answer.body
        assert answer.body["stale"] is True
        assert answer.seconds < 1.5
        # A pair it never served, and readiness: a quick 503.
        for path in ("/predict/BTC-USD", "/readyz"):
            answer = get(api, path)
            assert answer.status == 503, answer.body
            assert answer.headers["Retry-After"] == "1"
            assert answer.body["error"]["status"] == 503
            assert answer.seconds < 1.5
    assert get(api, "/healthz").status == 200

    redis_server.start()  # same port, empty: like a restarted cache
    wait_for(
        lambda: all_cached(redis_server), 30, what="worker refilled the cache after the restart"
    )
    for pair in PAIRS:
        answer = get(api, f"/predict/{pair}")
        assert (answer.status, answer.headers["X-Cache"]) == (200, "HIT")
    assert get(api, "/readyz").status == 200
    assert worker.running() and beat.running() and api.running()
    assert "WORKER TIMEOUT" not in api.output()


def test_a_corrupt_entry_is_recomputed(start: ProcessFactory, redis_server: RedisServer) -> None:
    api = start("api")
    client = redis_server.client()
    client.set(active_version_key(), TEST_VERSION)
    client.set(
        prediction_key("ETH-EUR", TEST_VERSION),
        b'{"pair": "ETH-EUR", "predicted_price": "lots"}',
        ex=60,
    )
    client.hset(prediction_key("BTC-EUR", TEST_VERSION), "predicted_price", "1")
    for pair in ("ETH-EUR", "BTC-EUR"):
        answer = get(api, f"/predict/{pair}")
        assert (answer.status, answer.headers["X-Cache"]) == (200, "MISS")
        assert answer.body["pair"] == pair and answer.body["predicted_price"] > 0
        stored = orjson.loads(client.get(prediction_key(pair, TEST_VERSION)))  # type: ignore[arg-type]
        assert stored == answer.body
        assert 0 < client.pttl(prediction_key(pair, TEST_VERSION)) <= (TEST_TTL + TEST_GRACE) * 1000
        assert computations(api, pair) == 1
    assert "invalid prediction entry pair=ETH-EUR" in api.output()
    assert "unreadable prediction entry pair=BTC-EUR" in api.output()


BAD_REQUESTS = [
    ("GET", "/predict/ETHEUR", 400),
    ("GET", "/predict/ETH-EUR-USD", 400),
    ("GET", "/predict/%00%ff", 400),
    ("GET", "/predict/" + "x" * 2000, 400),
    ("GET", "/predict/SOL-EUR", 404),
    ("GET", "/predict/DOGE-USD?refresh=1", 404),
    ("GET", "/predict/ETH/EUR", 404),
    ("GET", "/admin", 404),
    ("POST", "/predict/ETH-EUR", 405),
    ("DELETE", "/predict/ETH-EUR", 405),
    ("OPTIONS", "/predict/ETH-EUR", 405),
    ("PUT", "/pairs", 405),
]


def test_bad_requests_get_json_4xx_and_write_nothing(
    start: ProcessFactory, redis_server: RedisServer
) -> None:
    api = start("api")
    client = redis_server.client()
    before = set(client.keys())  # the pair registry, seeded from PAIRS at start
    assert not client.keys("pc:prediction:*")
    for method, path, status in BAD_REQUESTS:
        answer = get(api, path, method)
        assert answer.status == status, (method, path)
        assert answer.headers["Content-Type"] == "application/json"
        assert set(answer.body["error"]) == {"status", "code", "message"}
        assert set(client.keys()) == before, (method, path)
    assert api.count("computed prediction") == 0
    # A good request does write: the key count above could have moved. (On this fresh
    # cache it also makes the API's model the active version, and records its import.)
    assert get(api, "/predict/ETH-EUR").status == 200
    assert client.exists(prediction_key("ETH-EUR", TEST_VERSION))
    assert client.get(active_version_key()) == TEST_VERSION.encode()
    # Those three keys, and the pairs asked for (sent once a second): nothing else.
    written = set(client.keys()) - before
    assert len(written - {asked_pairs_key().encode()}) == 3
