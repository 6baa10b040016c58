from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys

import fakeredis
import orjson
import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from api import create_app
from predictions.cache import Limits
from predictions.infra.clock import RedisClock
from predictions.infra.keys import active_version_key, prediction_key
from predictions.model.predictor import Predictor
from predictions.settings import Settings
from predictions.wiring import make_redis, wire
from tests.harness.doubles import CountingModel, FailingModel
from tests.harness.processes import ROOT


def _error(response) -> dict[str, object]:  # type: ignore[no-untyped-def]
    assert response.mimetype == "application/json"
    body = orjson.loads(response.data)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"status", "code", "message"}
    assert body["error"]["status"] == response.status_code
    return body["error"]  # type: ignore[no-any-return]


def test_create_app_uses_the_given_settings(
    settings: Settings, redis_client: fakeredis.FakeRedis
) -> None:
    app = create_app(settings, redis_client)
    state = app.extensions["predictions"]
    assert state.settings is settings
    assert state.known.pairs == frozenset(settings.pairs)
    assert state.cache.store.redis is redis_client
    assert state.cache.limits == Limits.from_settings(settings)


def test_predict_misses_then_hits(client: FlaskClient, model: CountingModel) -> None:
    miss = client.get("/predict/ETH-EUR")
    hit = client.get("/predict/ETH-EUR")
    assert (miss.status_code, hit.status_code) == (200, 200)
    assert (miss.headers["X-Cache"], hit.headers["X-Cache"]) == ("MISS", "HIT")
    assert miss.data == hit.data
    body = hit.get_json()
    assert body["pair"] == "ETH-EUR"
    assert body["predicted_price"] == 123.0
    assert body["horizon_seconds"] == 300
    assert body["model_version"] == "counting-1"
    assert body["data_source"] == "synthetic"
    assert body["computed_at"].endswith("Z") and body["fresh_until"] > body["computed_at"]
    assert model.calls == ["ETH-EUR"]


def test_lower_case_pairs_are_canonicalised(client: FlaskClient) -> None:
    response = client.get("/predict/eth-eur")
    assert response.status_code == 200
    assert response.get_json()["pair"] == "ETH-EUR"


def test_head_works_like_get(client: FlaskClient) -> None:
    response = client.head("/predict/ETH-EUR")
    assert response.status_code == 200
    assert response.headers["X-Cache"] == "MISS"


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/predict/ETHEUR", 400, "invalid_pair"),
        ("/predict/ETH_EUR", 400, "invalid_pair"),
        ("/predict/" + "A" * 5000, 400, "invalid_pair"),
        ("/predict/SOL-EUR", 404, "unknown_pair"),
        ("/predict/sol-eur", 404, "unknown_pair"),
        ("/predict/ETH/EUR", 404, "not_found"),
        ("/predict/", 404, "not_found"),
        ("/predict/ETH-EUR/", 404, "not_found"),
        ("/predict//ETH-EUR", 404, "not_found"),
        ("/nothing", 404, "not_found"),
    ],
)
def test_bad_paths_get_json_errors_and_write_nothing(
    client: FlaskClient,
    redis_client: fakeredis.FakeRedis,
    model: CountingModel,
    path: str,
    status: int,
    code: str,
) -> None:
    before = redis_client.dbsize()  # the pair registry, seeded from PAIRS at start
    response = client.get(path)
    assert response.status_code == status
    assert _error(response)["code"] == code
    assert redis_client.dbsize() == before
    assert model.calls == []


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_other_methods_are_405_json(
    client: FlaskClient, method: str, redis_client: fakeredis.FakeRedis
) -> None:
    before = redis_client.dbsize()
    response = client.open("/predict/ETH-EUR", method=method)
    assert response.status_code == 405
    assert _error(response)["code"] == "method_not_allowed"
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD"}
    assert redis_client.dbsize() == before


def test_corrupt_entry_is_recomputed_and_overwritten(
    client: FlaskClient, redis_client: fakeredis.FakeRedis, model: CountingModel
) -> None:
    redis_client.set(active_version_key(), model.version)
    redis_client.hset(prediction_key("ETH-EUR", model.version), "price", "oops")
    response = client.get("/predict/ETH-EUR")
    assert response.status_code == 200
    assert response.headers["X-Cache"] == "MISS"
    assert redis_client.type(prediction_key("ETH-EUR", model.version)) == b"string"
    assert client.get("/predict/ETH-EUR").headers["X-Cache"] == "HIT"
    assert model.calls == ["ETH-EUR"]


def test_a_failing_model_is_a_503_and_nothing_is_cached(
    settings: Settings, redis_client: fakeredis.FakeRedis
) -> None:
    failing = dataclasses.replace(settings, model="tests.harness.doubles:FailingModel")
    predictor = wire(failing, role="test", redis_client=redis_client).predictor
    assert isinstance(predictor.models.default_model().model, FailingModel)
    client = create_app(settings, redis_client, predictor).test_client()
    response = client.get("/predict/ETH-EUR")
    assert response.status_code == 503
    assert _error(response)["code"] == "prediction_failed"
    assert response.headers["Retry-After"] == "1"
    assert redis_client.keys(prediction_key("*", "*")) == []  # no prediction


def test_pairs_lists_every_known_pair_with_its_age(client: FlaskClient, settings: Settings) -> None:
    client.get("/predict/BTC-EUR")
    answer = client.get("/pairs").get_json()
    assert answer["next_cursor"] is None
    pairs = answer["pairs"]
    assert [item["pair"] for item in pairs] == sorted(settings.pairs)
    cached = {item["pair"]: item for item in pairs if item["cached"]}
    assert set(cached) == {"BTC-EUR"}
    assert 0 <= cached["BTC-EUR"]["age_seconds"] < 5
    assert 25 < cached["BTC-EUR"]["fresh_for_seconds"] <= 30
    assert cached["BTC-EUR"]["status"] == "fresh"


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").get_json() == {"status": "ready"}


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_redis_is_a_503_with_retry_after(
    settings: Settings, predictor: Predictor
) -> None:
    dead = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:{_closed_port()}/0")
    client = create_app(dead, make_redis(dead, client_name="test"), predictor).test_client()
    for path in ("/predict/ETH-EUR", "/pairs", "/readyz"):
        response = client.get(path)
        assert response.status_code == 503, path
        assert response.headers["Retry-After"] == "1"
        assert _error(response)["code"] in {"cache_unavailable", "not_ready"}
    assert client.get("/healthz").status_code == 200


@hypothesis_settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(segment=st.text(min_size=1, max_size=60), query=st.text(max_size=40))
def test_no_path_segment_or_query_makes_a_5xx_or_writes_a_key(
    client: FlaskClient, redis_client: fakeredis.FakeRedis, segment: str, query: str
) -> None:
    from urllib.parse import quote

    before = redis_client.dbsize()
    response = client.get(f"/predict/{quote(segment, safe='')}", query_string={"q": query})
    assert response.status_code < 500
    if response.status_code >= 400:
        _error(response)
        assert redis_client.dbsize() == before
    else:
        assert response.status_code == 200
        assert response.get_json()["pair"] in {"ETH-EUR", "BTC-EUR", "ETH-USD", "BTC-USD"}


def test_a_stale_answer_says_so(settings: Settings, predictor: Predictor) -> None:
    dead = dataclasses.replace(
        settings, redis_url=f"redis://127.0.0.1:{_closed_port()}/0", near_cache_seconds=0
    )
    app = create_app(dead, make_redis(dead, client_name="test"), predictor)
    app.extensions["predictions"].cache.near.put(predictor.compute("ETH-EUR"))
    response = app.test_client().get("/predict/ETH-EUR")
    assert response.status_code == 200
    assert response.headers["X-Cache"] == "STALE"
    body = response.get_json()
    assert body["stale"] is True and body["pair"] == "ETH-EUR"


class CountingRedis(fakeredis.FakeRedis):
    """Counts the commands sent: the batch read must not grow with its size."""

    commands = 0

    def execute_command(self, *args, **options):  # type: ignore[no-untyped-def]
        CountingRedis.commands += 1
        return super().execute_command(*args, **options)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("count", [1, 4, 50])
def test_a_batch_read_is_one_redis_command_whatever_its_size(
    settings: Settings, predictor: Predictor, count: int
) -> None:
    pairs = [f"C{i:03d}-EUR" for i in range(count)]
    wide = dataclasses.replace(settings, pairs=tuple(pairs), near_cache_seconds=0)
    app = create_app(wide, CountingRedis(), predictor)
    # The first read loads the read script into Redis (NOSCRIPT, SCRIPT LOAD): once.
    app.test_client().get("/predict", query_string={"pairs": pairs[0]})
    CountingRedis.commands = 0
    response = app.test_client().get("/predict", query_string={"pairs": ",".join(pairs)})
    assert response.status_code == 200
    assert CountingRedis.commands == 1
    assert [item["status"] for item in response.get_json()["items"]] == ["missing"] * count


def test_a_batch_says_per_item_what_it_has(client: FlaskClient) -> None:
    client.get("/predict/ETH-EUR")
    response = client.get("/predict", query_string={"pairs": "eth-eur,BTC-EUR,SOL-EUR,E/X"})
    items = response.get_json()["items"]
    assert [(item["pair"], item["status"]) for item in items] == [
        ("ETH-EUR", "fresh"),
        ("BTC-EUR", "missing"),
        ("SOL-EUR", "error"),
        ("E/X", "error"),
    ]
    assert items[0]["prediction"]["pair"] == "ETH-EUR"
    assert [items[2]["error"]["code"], items[3]["error"]["code"]] == [
        "unknown_pair",
        "invalid_pair",
    ]


@pytest.mark.parametrize(
    "query", ["", "pairs=", "pairs=,,", "pairs=" + ",".join(["ETH-EUR"] * 101)]
)
def test_a_batch_needs_one_to_a_hundred_pairs(client: FlaskClient, query: str) -> None:
    response = client.get(f"/predict?{query}")
    assert response.status_code == 400
    assert _error(response)["code"] == "bad_request"


def test_the_api_starts_whatever_the_broker_says(redis_client: fakeredis.FakeRedis) -> None:
    # The API never uses the broker: a value only the worker would refuse is no concern.
    settings = Settings.from_env(
        {"CELERY_BROKER_URL": "kafka://user:secret@k:9092", "SIMULATED_MODEL_LATENCY_SECONDS": "0"}
    )
    client = create_app(settings, redis_client).test_client()
    assert client.get("/predict/ETH-EUR").status_code == 200


def test_the_api_keeps_time_by_redis_clock(redis_client: fakeredis.FakeRedis) -> None:
    settings = Settings(simulated_model_latency_seconds=0)
    cache = create_app(settings, redis_client).extensions["predictions"].cache
    assert isinstance(cache.clock, RedisClock) and cache.clock.measured
    assert cache.store.clock is cache.clock and cache.predictor.clock is cache.clock


def test_serving_the_api_never_loads_celery() -> None:
    # import-linter reads our imports; this reads what the real entry point loads, in a
    # fresh interpreter, third-party packages' own imports included.
    code = (
        "import sys, api.wsgi; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('celery', 'kombu', 'worker')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "", "SIMULATED_MODEL_LATENCY_SECONDS": "0"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
