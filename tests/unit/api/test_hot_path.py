"""The hot path answers a fresh hit without Flask, with the very answer the Flask view
gives (api/answer.py), and hands everything else to the view."""

from __future__ import annotations

import fakeredis
import pytest
from flask import Flask
from werkzeug.test import Client, TestResponse

from api import create_app
from api.hot_path import HotPath
from predictions.model import Predictor, SyntheticMarketData
from predictions.settings import Settings
from tests.harness.doubles import CountingModel, ManualClock

START = 1_800_000_000.0
TTL = 30


class FailsAfterFirst(CountingModel):
    """Answers once, then fails: a stale prediction stays stale (its revalidation fails)."""

    def predict(self, pair: str, prices: object, horizon_seconds: int = 0) -> float:
        if self.calls:
            raise RuntimeError("model down")
        return super().predict(pair, prices, horizon_seconds)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(now=START)


@pytest.fixture
def app(clock: ManualClock) -> Flask:
    settings = Settings(
        pairs=("ETH-EUR", "BTC-EUR"),
        prediction_ttl_seconds=TTL,
        refresh_interval_seconds=10,
        simulated_model_latency_seconds=0,
        stale_grace_seconds=60,
        early_revalidation_beta=0,
        failed_compute_backoff_seconds=600,
    )
    predictor = Predictor(FailsAfterFirst(), SyntheticMarketData(), 300, TTL, clock=clock)
    return create_app(settings, fakeredis.FakeRedis(), predictor, clock=clock)


def _both_ways(app: Flask, headers: dict[str, str] | None = None) -> list[TestResponse]:
    """The same request through the app as served (hot path first) and through the
    Flask view alone."""
    hot_path = app.wsgi_app
    assert isinstance(hot_path, HotPath)
    return [
        Client(wsgi).get("/predict/ETH-EUR", headers=headers or {})
        for wsgi in (hot_path, hot_path.app)
    ]


def _same(served: TestResponse, view: TestResponse) -> None:
    def comparable(response: TestResponse) -> dict[str, str]:
        return {k: v for k, v in response.headers.items() if k not in ("Date", "Server-Timing")}

    assert served.status_code == view.status_code
    assert served.data == view.data
    assert comparable(served) == comparable(view)
    assert served.headers["Server-Timing"].startswith("cache;dur=")


def test_fresh_stale_and_304_answers_are_the_same_either_way(
    app: Flask, clock: ManualClock
) -> None:
    first = app.test_client().get("/predict/ETH-EUR")  # a miss: the view computes it
    assert first.headers["X-Cache"] == "MISS"
    clock.advance(5)
    served, view = _both_ways(app)
    assert served.headers["X-Cache"] == view.headers["X-Cache"] == "HIT"
    _same(served, view)
    etag = served.headers["ETag"]
    _same(*_both_ways(app, {"If-None-Match": etag}))
    assert _both_ways(app, {"If-None-Match": etag})[0].status_code == 304
    clock.advance(TTL)  # past its freshness: stale (its revalidation fails)
    served, view = _both_ways(app)
    assert served.headers["X-Cache"] == "STALE" and served.get_json()["stale"] is True
    _same(served, view)
    stale_etag = served.headers["ETag"]
    assert stale_etag != etag
    _same(*_both_ways(app, {"If-None-Match": stale_etag}))


def test_only_a_plain_get_of_a_fresh_canonical_pair_takes_the_hot_path(
    app: Flask, clock: ManualClock
) -> None:
    client = app.test_client()
    client.get("/predict/ETH-EUR")
    hot_path = app.wsgi_app
    assert isinstance(hot_path, HotPath)
    seen: list[str] = []
    flask = hot_path.app

    def view(environ, start_response):  # type: ignore[no-untyped-def]
        seen.append(environ["PATH_INFO"] + "?" + environ.get("QUERY_STRING", ""))
        return flask(environ, start_response)

    hot_path.app = view
    assert client.get("/predict/ETH-EUR").headers["X-Cache"] == "HIT"
    assert seen == []  # answered by the hot path
    client.get("/predict/eth-eur")  # another spelling
    client.get("/predict/ETH-EUR?x=1")  # a query string
    client.get("/predict/ETH-EUR", headers={"If-None-Match": '"x"'})  # a validator
    client.head("/predict/ETH-EUR")  # not a GET
    client.get("/predict/BTC-EUR")  # no near copy yet
    client.get("/predict/SOL-EUR")  # not configured
    assert len(seen) == 6


def test_prepared_answers_are_reused_within_a_second_and_rebuilt_after_it(
    app: Flask, clock: ManualClock
) -> None:
    client = app.test_client()
    client.get("/predict/ETH-EUR")
    # Wall time only: the near copy stays young enough to take the hot path.
    clock.instant += 0.2
    first = client.get("/predict/ETH-EUR")
    hot_path = app.wsgi_app
    assert isinstance(hot_path, HotPath)
    prepared = hot_path._prepared["ETH-EUR"]
    clock.instant += 0.3
    client.get("/predict/ETH-EUR")
    assert hot_path._prepared["ETH-EUR"] is prepared  # the same second: reused
    clock.instant += 1.0
    later = client.get("/predict/ETH-EUR")
    assert hot_path._prepared["ETH-EUR"] is not prepared
    assert later.headers["Cache-Control"] != first.headers["Cache-Control"]  # max-age
    assert later.headers["ETag"] == first.headers["ETag"]  # the same body


def test_a_hot_hit_is_counted_and_logged_like_any_answer(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    client = app.test_client()
    client.get("/predict/ETH-EUR")

    def hits() -> float:
        text = client.get("/metrics").get_data(as_text=True)
        line = next(x for x in text.splitlines() if x.startswith("prediction_requests_total"))
        found = [x for x in text.splitlines() if 'prediction_requests_total{outcome="hit"}' in x]
        assert line
        return float(found[0].split()[-1]) if found else 0.0

    before = hits()
    with caplog.at_level("INFO", logger="api.access"):
        caplog.clear()
        assert client.get("/predict/ETH-EUR").headers["X-Cache"] == "HIT"
        (record,) = [r for r in caplog.records if r.name == "api.access"]
    assert hits() == before + 1
    assert record.getMessage() == "GET /predict/ETH-EUR 200"
    assert vars(record)["outcome"] == "hit"
