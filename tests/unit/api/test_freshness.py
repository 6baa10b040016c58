"""The freshness model through the API, with a controlled clock: every stage of a
prediction's life (just computed, mid-life, stale within grace, past grace), its
headers, stale-while-revalidate, stale-if-error and XFetch's early revalidation."""

from __future__ import annotations

import dataclasses
import threading
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from predictions.cache import PredictionCache
from predictions.model.market_data import SyntheticMarketData
from predictions.model.predictor import Predictor
from predictions.settings import Settings
from tests.harness.doubles import CountingModel, ManualClock

TTL = 30
GRACE = 20
START = 1_800_000_000.0  # 2027-01-15: far from the real clock, which must not matter


class SwitchModel(CountingModel):
    """Counts its calls; fails while ``failing`` is set; can be held mid-computation."""

    def __init__(self) -> None:
        super().__init__(price=100.0)
        self.failing = False
        self.gate = threading.Event()
        self.gate.set()

    def predict(self, pair: str, prices: object, horizon_seconds: int = 0) -> float:
        self.gate.wait(5)
        price = super().predict(pair, prices, horizon_seconds)  # type: ignore[arg-type]
        if self.failing:
            raise RuntimeError("model down")
        return price


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(now=START)


@pytest.fixture
def model() -> SwitchModel:
    return SwitchModel()


@pytest.fixture
def app(clock: ManualClock, model: SwitchModel) -> Flask:
    settings = Settings(
        pairs=("ETH-EUR", "BTC-EUR"),
        prediction_ttl_seconds=TTL,
        refresh_interval_seconds=10,
        simulated_model_latency_seconds=0,
        stale_grace_seconds=GRACE,
        near_cache_seconds=0,
        # No early revalidation unless a test asks for it: the stages must be deterministic.
        early_revalidation_beta=0,
        failed_compute_backoff_seconds=5,
    )
    predictor = Predictor(
        models=model,
        market_data=SyntheticMarketData(),
        horizon_seconds=300,
        ttl_seconds=TTL,
        clock=clock,
    )
    return create_app(settings, fakeredis.FakeRedis(), predictor, clock=clock)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def _cache(app: Flask) -> PredictionCache:
    cache: PredictionCache = app.extensions["predictions"].cache
    return cache


def _settle(app: Flask) -> None:
    assert _cache(app).revalidator.wait_idle(5), "a background revalidation did not finish"


def _directives(cache_control: str) -> dict[str, int]:
    return {
        name: int(value)
        for name, _, value in (item.strip().partition("=") for item in cache_control.split(","))
    }


def test_every_stage_of_a_prediction_has_exactly_its_headers(
    app: Flask, client: FlaskClient, clock: ManualClock, model: SwitchModel
) -> None:
    # Just computed (a miss computes it now): fresh for its whole lifetime, never stale.
    first = client.get("/predict/ETH-EUR")
    assert first.status_code == 200 and first.headers["X-Cache"] == "MISS"
    assert first.headers["Cache-Control"] == (
        f"max-age={TTL}, stale-while-revalidate=0, stale-if-error=0"
    )
    assert "Age" not in first.headers
    assert parsedate_to_datetime(first.headers["Expires"]).timestamp() == START + TTL
    assert parsedate_to_datetime(first.headers["Last-Modified"]).timestamp() == START
    assert first.headers["X-Accel-Expires"] == f"@{int(START + TTL) - 1}"
    etag = first.headers["ETag"]
    body = first.get_json()
    assert "stale" not in body

    # Mid-life: a hit; max-age is the freshness left, rounded down.
    clock.instant = START + 12.5
    mid = client.get("/predict/ETH-EUR")
    assert mid.headers["X-Cache"] == "HIT"
    assert _directives(mid.headers["Cache-Control"])["max-age"] == TTL - 13
    assert parsedate_to_datetime(mid.headers["Expires"]).timestamp() == START + TTL - 1
    assert mid.headers["ETag"] == etag and mid.get_json() == body
    # A 304 carries what the 200 carries at that instant.
    same = client.get("/predict/ETH-EUR", headers={"If-None-Match": etag})
    assert same.status_code == 304
    for name in ("Cache-Control", "Expires", "ETag", "X-Accel-Expires", "X-Cache"):
        assert same.headers[name] == mid.headers[name], name

    # Past fresh, within grace: the same prediction, marked stale, at once, with its
    # own validators; a cache may reuse it for a second and serve it until the grace
    # ends while it revalidates.
    model.gate.clear()  # hold the background recomputation
    clock.instant = START + TTL + 5
    stale = client.get("/predict/ETH-EUR")
    assert stale.status_code == 200 and stale.headers["X-Cache"] == "STALE"
    assert stale.get_json() == body | {"stale": True}
    left = GRACE - 5
    assert _directives(stale.headers["Cache-Control"]) == {
        "max-age": 1,
        "stale-while-revalidate": left - 1,
        "stale-if-error": left - 1,
    }
    assert stale.headers["ETag"] != etag
    assert parsedate_to_datetime(stale.headers["Last-Modified"]).timestamp() == START + TTL
    # The fresh body's validator no longer matches: a cache holding it gets the stale one.
    revalidated = client.get("/predict/ETH-EUR", headers={"If-None-Match": etag})
    assert revalidated.status_code == 200 and revalidated.get_json()["stale"] is True
    again_stale = client.get("/predict/ETH-EUR", headers={"If-None-Match": stale.headers["ETag"]})
    assert again_stale.status_code == 304
    for name in ("Cache-Control", "Expires", "ETag", "X-Accel-Expires", "X-Cache"):
        assert again_stale.headers[name] == stale.headers[name], name
    model.gate.set()
    _settle(app)
    # The background recomputation landed: fresh again, a new ETag.
    assert model.calls == ["ETH-EUR", "ETH-EUR"]
    again = client.get("/predict/ETH-EUR")
    assert again.headers["X-Cache"] == "HIT"
    assert again.headers["ETag"] not in (etag, stale.headers["ETag"])
    assert _directives(again.headers["Cache-Control"])["max-age"] == TTL

    # Past grace, with the model failing: never served; 503 with Retry-After.
    model.failing = True
    clock.instant = START + 2 * TTL + 5 + GRACE + 1
    gone = client.get("/predict/ETH-EUR")
    assert gone.status_code == 503
    assert gone.headers["Retry-After"] == "1"
    assert gone.headers["Cache-Control"] == "no-store"
    assert gone.get_json()["error"]["code"] == "prediction_failed"


def test_a_stale_pair_is_recomputed_exactly_once_however_many_ask(
    app: Flask, client: FlaskClient, clock: ManualClock, model: SwitchModel
) -> None:
    client.get("/predict/ETH-EUR")
    model.gate.clear()
    clock.instant = START + TTL + 1
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: app.test_client().get("/predict/ETH-EUR"), range(64)))
    assert {answer.headers["X-Cache"] for answer in answers} == {"STALE"}
    model.gate.set()
    _settle(app)
    assert model.calls == ["ETH-EUR", "ETH-EUR"]  # the miss, then one recomputation


def test_stale_if_error_serves_stale_until_the_grace_ends_then_503(
    app: Flask, client: FlaskClient, clock: ManualClock, model: SwitchModel
) -> None:
    client.get("/predict/ETH-EUR")
    model.failing = True
    served = []
    for offset in (1, 2, 8, 14, GRACE - 0.5):
        clock.instant = START + TTL + offset
        answer = client.get("/predict/ETH-EUR")
        _settle(app)
        served.append((answer.status_code, answer.headers.get("X-Cache")))
    assert served == [(200, "STALE")] * 5
    # The failing pair rests between attempts (5 s of real time here), so the model
    # was asked once, not once per request.
    assert model.calls == ["ETH-EUR", "ETH-EUR"]
    clock.instant = START + TTL + GRACE
    past = client.get("/predict/ETH-EUR")
    assert past.status_code == 503 and past.headers["Retry-After"] == "1"


def test_a_failing_pair_is_not_recomputed_on_every_miss(
    client: FlaskClient, clock: ManualClock, model: SwitchModel
) -> None:
    model.failing = True
    statuses = [client.get("/predict/BTC-EUR").status_code for _ in range(5)]
    assert statuses == [503] * 5
    assert model.calls == ["BTC-EUR"]


def test_batch_reads_mark_stale_items_and_revalidate_them(
    app: Flask, client: FlaskClient, clock: ManualClock, model: SwitchModel
) -> None:
    client.get("/predict/ETH-EUR")
    clock.instant = START + TTL + 1
    items = client.get("/predict?pairs=ETH-EUR,BTC-EUR").get_json()["items"]
    assert [item["status"] for item in items] == ["stale", "missing"]
    assert items[0]["prediction"]["stale"] is True
    _settle(app)
    assert model.calls == ["ETH-EUR", "ETH-EUR"]
    items = client.get("/predict?pairs=ETH-EUR").get_json()["items"]
    assert items[0]["status"] == "fresh"


def test_pairs_says_which_are_stale(
    client: FlaskClient, clock: ManualClock, model: SwitchModel
) -> None:
    client.get("/predict/ETH-EUR")
    model.gate.clear()
    clock.instant = START + TTL + 1
    (item,) = [p for p in client.get("/pairs").get_json()["pairs"] if p["cached"]]
    assert item["status"] == "stale" and item["fresh_for_seconds"] == 0
    model.gate.set()
    clock.instant = START + TTL + GRACE + 1
    assert not any(p["cached"] for p in client.get("/pairs").get_json()["pairs"])


def test_an_early_revalidation_keeps_a_hot_pair_from_ever_going_stale(
    app: Flask, client: FlaskClient, clock: ManualClock, model: SwitchModel
) -> None:
    cache = _cache(app)
    cache.limits = dataclasses.replace(cache.limits, early_revalidation_beta=1.0)
    cache.draw = lambda: 0.999  # 1 - draw = 0.001: -log = 6.9, so 6.9 * delta * beta
    client.get("/predict/ETH-EUR")
    computed = model.calls.copy()
    # Far from expiry: no early revalidation even with a small draw.
    clock.instant = START + 1
    assert client.get("/predict/ETH-EUR").headers["X-Cache"] == "HIT"
    _settle(app)
    assert model.calls == computed
    # Close to expiry (within 6.9 x its compute time, here tiny): refreshed early.
    delta = client.get("/predict/ETH-EUR").get_json()["compute_seconds"]
    clock.instant = START + TTL - delta
    answer = client.get("/predict/ETH-EUR")
    assert answer.headers["X-Cache"] == "HIT"
    _settle(app)
    assert model.calls == [*computed, "ETH-EUR"]
    clock.instant = START + TTL + 0.0001
    assert client.get("/predict/ETH-EUR").headers["X-Cache"] == "HIT"  # never went stale
