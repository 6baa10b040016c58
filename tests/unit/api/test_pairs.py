"""The known pairs as the API serves them: a paginated /pairs, a registry that changes
under a running app, and the record of what clients ask for (PRECOMPUTE=asked)."""

from __future__ import annotations

from typing import cast

import fakeredis
import orjson
import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from api.openapi import MAX_PAGE
from predictions.infra.keys import asked_pairs_key
from predictions.model.market_data import SyntheticMarketData
from predictions.model.predictor import Predictor
from predictions.registry import PairRegistry
from predictions.settings import Settings
from tests.harness.doubles import CountingModel, ManualClock

PAIRS = tuple(f"P{i:02d}-EUR" for i in range(7))


@pytest.fixture
def settings() -> Settings:
    return Settings(
        pairs=PAIRS,
        prediction_ttl_seconds=30,
        refresh_interval_seconds=10,
        simulated_model_latency_seconds=0,
        near_cache_seconds=0.5,
    )


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(now=1_800_000_000.0)  # still: a near copy outlives each test


@pytest.fixture
def predictor(settings: Settings, model: CountingModel, clock: ManualClock) -> Predictor:
    return Predictor(
        model, SyntheticMarketData(), 300, settings.prediction_ttl_seconds, clock=clock
    )


@pytest.fixture
def app(
    settings: Settings, redis_client: fakeredis.FakeRedis, predictor: Predictor, clock: ManualClock
) -> Flask:
    return create_app(settings, redis_client, predictor, clock=clock)


def _registry(app: Flask) -> PairRegistry:
    return app.extensions["predictions"].known.registry  # type: ignore[no-any-return]


def _reload(app: Flask) -> None:
    """What the registry watcher does within a second (not running in tests)."""
    assert app.extensions["predictions"].known.reload_if_changed()


def _error(response) -> dict[str, object]:  # type: ignore[no-untyped-def]
    assert response.mimetype == "application/json"
    body = orjson.loads(response.data)
    assert body["error"]["status"] == response.status_code
    return body["error"]  # type: ignore[no-any-return]


def _page(client: FlaskClient, query: str = "") -> tuple[list[str], str | None]:
    response = client.get(f"/pairs{query}")
    assert response.status_code == 200, response.data
    body = response.get_json()
    return [item["pair"] for item in body["pairs"]], body["next_cursor"]


def test_pairs_come_a_page_at_a_time_in_name_order(client: FlaskClient) -> None:
    assert _page(client) == (list(PAIRS), None)  # one page holds them all
    seen: list[str] = []
    cursor: str | None = ""
    pages = 0
    while cursor is not None:
        page, cursor = _page(client, f"?limit=3&cursor={cursor}")
        seen += page
        pages += 1
    assert seen == list(PAIRS)
    assert pages == 3  # 3, 3 and 1: the last page says there is no next one


def test_a_page_that_ends_exactly_at_the_last_pair_has_no_next_cursor(
    client: FlaskClient,
) -> None:
    assert _page(client, "?limit=7") == (list(PAIRS), None)
    assert _page(client, "?limit=6") == (list(PAIRS[:6]), "P05-EUR")
    assert _page(client, "?limit=6&cursor=P05-EUR") == (["P06-EUR"], None)
    assert _page(client, "?cursor=P06-EUR") == ([], None)


def test_a_cursor_is_spelled_as_any_pair_and_need_not_be_known(client: FlaskClient) -> None:
    assert _page(client, "?limit=2&cursor=p01-eur") == (["P02-EUR", "P03-EUR"], "P03-EUR")
    # Between two known pairs (one removed since, say): the page starts after it.
    assert _page(client, "?limit=2&cursor=P01-EZZ") == (["P02-EUR", "P03-EUR"], "P03-EUR")


def test_a_page_stays_right_when_pairs_are_added_or_removed_before_the_cursor(
    app: Flask, client: FlaskClient
) -> None:
    first, cursor = _page(client, "?limit=3")
    assert (first, cursor) == (list(PAIRS[:3]), "P02-EUR")
    _registry(app).add({"A-EUR": "", "P00A-EUR": ""})  # both sort before the cursor
    _registry(app).remove(["P01-EUR"])
    _reload(app)
    assert _page(client, f"?limit=3&cursor={cursor}") == (list(PAIRS[3:6]), "P05-EUR")
    assert _page(client)[0] == sorted({*PAIRS, "A-EUR", "P00A-EUR"} - {"P01-EUR"})


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        f"limit={MAX_PAGE + 1}",
        "limit=-1",
        "limit=abc",
        "limit=",
        "limit=1.5",
        "limit=%C2%B2",  # "²": a digit to str.isdigit, not to int()
        "limit=" + "9" * 5000,  # more digits than int() takes
        "limit=%EF%BC%91",  # a full-width "1"
    ],
)
def test_a_limit_out_of_bounds_is_a_400_json_error(client: FlaskClient, query: str) -> None:
    response = client.get(f"/pairs?{query}")
    assert response.status_code == 400
    error = _error(response)
    assert error["code"] == "bad_request"
    assert error["message"] == f"limit: give a whole number from 1 to {MAX_PAGE}"


def test_the_largest_page_is_allowed(client: FlaskClient) -> None:
    assert _page(client, f"?limit={MAX_PAGE}") == (list(PAIRS), None)


@pytest.mark.parametrize("cursor", ["bad!", "ETH", "x" * 200])
def test_a_cursor_that_is_not_a_pair_is_a_400_json_error(client: FlaskClient, cursor: str) -> None:
    response = client.get(f"/pairs?cursor={cursor}")
    assert response.status_code == 400
    assert _error(response)["message"] == "cursor: give the next_cursor of the previous page"


def test_each_pair_says_its_own_freshness(app: Flask, client: FlaskClient) -> None:
    _registry(app).add({"P00-EUR": "90:15"})
    _reload(app)
    items = {item["pair"]: item for item in client.get("/pairs").get_json()["pairs"]}
    assert (items["P00-EUR"]["ttl_seconds"], items["P00-EUR"]["refresh_seconds"]) == (90, 15)
    assert (items["P01-EUR"]["ttl_seconds"], items["P01-EUR"]["refresh_seconds"]) == (30, 10)
    assert client.get("/pairs").headers["Cache-Control"] == "no-cache"


def test_a_removed_pair_is_a_404_once_the_view_moves(
    app: Flask, client: FlaskClient, model: CountingModel
) -> None:
    assert client.get("/predict/P03-EUR").headers["X-Cache"] == "MISS"
    assert client.get("/predict/P03-EUR").headers["X-Cache"] == "HIT"  # the near copy
    _registry(app).remove(["P03-EUR"])
    assert client.get("/predict/P03-EUR").status_code == 200  # not yet seen
    _reload(app)
    for path in ("/predict/P03-EUR", "/predict/p03-eur"):
        response = client.get(path)
        assert response.status_code == 404
        assert _error(response)["code"] == "unknown_pair"
    batch = client.get("/predict?pairs=P03-EUR,P04-EUR").get_json()["items"]
    assert batch[0]["status"] == "error" and batch[0]["error"]["code"] == "unknown_pair"
    assert "P03-EUR" not in _page(client)[0]
    assert batch[1] == {"pair": "P04-EUR", "status": "missing"}  # a batch never computes
    assert model.calls == ["P03-EUR"]


def test_an_added_pair_is_served_once_the_view_moves(
    app: Flask, client: FlaskClient, model: CountingModel
) -> None:
    assert client.get("/predict/SOL-EUR").status_code == 404
    _registry(app).add({"SOL-EUR": ""})
    _reload(app)
    assert client.get("/predict/SOL-EUR").status_code == 200
    assert model.calls == ["SOL-EUR"]


def _asked(redis_client: fakeredis.FakeRedis) -> set[str]:
    found = cast(list[bytes], redis_client.zrange(asked_pairs_key(), 0, -1))
    return {pair.decode() for pair in found}


def test_known_pairs_asked_for_are_recorded_and_flushed_together(
    app: Flask, client: FlaskClient, redis_client: fakeredis.FakeRedis
) -> None:
    client.get("/predict/P00-EUR")  # a miss, through the view
    client.get("/predict/P00-EUR")  # a hit, on the hot path
    client.get("/predict/p01-eur")  # recorded under its canonical name
    client.get("/predict?pairs=P02-EUR,P02-EUR,SOL-EUR,bad!")
    client.get("/predict/SOL-EUR")  # unknown: 404, never recorded
    client.get("/pairs")  # listing asks for nothing
    # Nothing written per request: only a flush writes, once, every pair asked.
    assert _asked(redis_client) == set()
    assert app.extensions["predictions"].asked.flush() == 3
    assert _asked(redis_client) == {"P00-EUR", "P01-EUR", "P02-EUR"}


def test_a_hot_path_hit_is_recorded_too(
    app: Flask, client: FlaskClient, redis_client: fakeredis.FakeRedis
) -> None:
    asked = app.extensions["predictions"].asked
    client.get("/predict/P05-EUR")
    asked.flush()
    redis_client.delete(asked_pairs_key())
    assert client.get("/predict/P05-EUR").headers["X-Cache"] == "HIT"
    assert asked.flush() == 1
    assert _asked(redis_client) == {"P05-EUR"}


def test_an_app_given_its_client_starts_no_background_thread(
    settings: Settings, redis_client: fakeredis.FakeRedis, predictor: Predictor
) -> None:
    app = create_app(settings, redis_client, predictor)
    app.test_client().get("/predict/P00-EUR")
    state = app.extensions["predictions"]
    assert state.known._watcher.thread is None and state.asked._flusher.thread is None


def test_a_page_is_read_from_redis_a_page_at_a_time(
    app: Flask, client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = app.extensions["predictions"].cache.store
    read: list[list[str]] = []
    read_many = store.read_many

    def counted(pairs: list[str]):  # type: ignore[no-untyped-def]
        read.append(list(pairs))
        return read_many(pairs)

    monkeypatch.setattr(store, "read_many", counted)
    _page(client, "?limit=2&cursor=P02-EUR")
    assert read == [["P03-EUR", "P04-EUR"]]
