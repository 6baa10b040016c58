"""The freshness model through the API, with a controlled clock: every stage of a
prediction's life (just computed, mid-life, stale within grace, past grace), its
headers, stale-while-revalidate, stale-if-error and XFetch's early refresh."""

from __future__ import annotations

import dataclasses
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from predictions.cache import PredictionCache
from predictions.market_data import SyntheticMarketData
from predictions.predictor import Predictor
from predictions.revalidation import refresh_early
from predictions.settings import Settings
from tests.support import CountingModel

TTL = 30
GRACE = 20
START = 1_800_000_000.0  # 2027-01-15: far from the real clock, which must not matter


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class SwitchModel(CountingModel):
    """Counts its calls; fails while ``failing`` is set; can be held mid-computation."""

    def __init__(self) -> None:
        super().__init__(price=100.0)
        self.failing = False
        self.gate = threading.Event()
        self.gate.set()

    def predict(self, pair: str, prices: object, horizon_seconds: int) -> float:
        self.gate.wait(5)
        price = super().predict(pair, prices, horizon_seconds)  # type: ignore[arg-type]
        if self.failing:
            raise RuntimeError("model down")
        return price


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def model() -> SwitchModel:
    return SwitchModel()


@pytest.fixture
def app(clock: Clock, model: SwitchModel) -> Flask:
    settings = Settings(
        pairs=("ETH-EUR", "BTC-EUR"),
        prediction_ttl_seconds=TTL,
        refresh_interval_seconds=10,
        simulated_model_latency_seconds=0,
        stale_grace_seconds=GRACE,
        near_cache_seconds=0,
        # No early refresh unless a test asks for it: the stages must be deterministic.
        early_refresh_beta=0,
        failed_compute_backoff_seconds=5,
    )
    predictor = Predictor(
        model=model,
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
    assert _cache(app).refresher.wait_idle(5), "a background refresh did not finish"


def _max_age(cache_control: str) -> int:
    return int(cache_control.split(",")[0].removeprefix("max-age="))


def test_every_stage_of_a_prediction_has_exactly_its_headers(
    app: Flask, client: FlaskClient, clock: Clock, model: SwitchModel
) -> None:
    # Just computed (a miss computes it now).
    first = client.get("/predict/ETH-EUR")
    assert first.status_code == 200 and first.headers["X-Cache"] == "MISS"
    cache_control = f"max-age={TTL}, stale-while-revalidate={GRACE}, stale-if-error={GRACE}"
    assert first.headers["Cache-Control"] == cache_control
    assert first.headers["Age"] == "0"
    assert first.headers["X-Accel-Expires"] == f"@{int(START + TTL) - 1}"
    etag = first.headers["ETag"]
    body = first.get_json()
    assert "stale" not in body

    # Mid-life: a hit; max-age minus Age is the freshness left.
    clock.now = START + 12.5
    mid = client.get("/predict/ETH-EUR")
    assert mid.headers["X-Cache"] == "HIT"
    assert mid.headers["Cache-Control"] == cache_control
    assert _max_age(mid.headers["Cache-Control"]) - int(mid.headers["Age"]) == TTL - 12
    assert mid.headers["ETag"] == etag and mid.get_json() == body

    # Past fresh, within grace: the same prediction, marked stale, at once.
    model.gate.clear()  # hold the background recomputation
    clock.now = START + TTL + 5
    stale = client.get("/predict/ETH-EUR")
    assert stale.status_code == 200 and stale.headers["X-Cache"] == "STALE"
    assert stale.get_json() == body | {"stale": True}
    assert int(stale.headers["Age"]) - _max_age(stale.headers["Cache-Control"]) == 5
    assert stale.headers["ETag"] == etag
    model.gate.set()
    _settle(app)
    # The background recomputation landed: fresh again, a new ETag.
    assert model.calls == ["ETH-EUR", "ETH-EUR"]
    again = client.get("/predict/ETH-EUR")
    assert again.headers["X-Cache"] == "HIT" and again.headers["ETag"] != etag
    assert again.headers["Age"] == "0"

    # Past grace, with the model failing: never served; 503 with Retry-After.
    model.failing = True
    clock.now = START + 2 * TTL + 5 + GRACE + 1
    gone = client.get("/predict/ETH-EUR")
    assert gone.status_code == 503
    assert gone.headers["Retry-After"] == "1"
    assert gone.headers["Cache-Control"] == "no-store"
    assert gone.get_json()["error"]["code"] == "prediction_failed"


def test_a_stale_pair_is_recomputed_exactly_once_however_many_ask(
    app: Flask, client: FlaskClient, clock: Clock, model: SwitchModel
) -> None:
    client.get("/predict/ETH-EUR")
    model.gate.clear()
    clock.now = START + TTL + 1
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda _: app.test_client().get("/predict/ETH-EUR"), range(64)))
    assert {answer.headers["X-Cache"] for answer in answers} == {"STALE"}
    model.gate.set()
    _settle(app)
    assert model.calls == ["ETH-EUR", "ETH-EUR"]  # the miss, then one recomputation


def test_stale_if_error_serves_stale_until_the_grace_ends_then_503(
    app: Flask, client: FlaskClient, clock: Clock, model: SwitchModel
) -> None:
    client.get("/predict/ETH-EUR")
    model.failing = True
    served = []
    for offset in (1, 2, 8, 14, GRACE - 0.5):
        clock.now = START + TTL + offset
        answer = client.get("/predict/ETH-EUR")
        _settle(app)
        served.append((answer.status_code, answer.headers.get("X-Cache")))
    assert served == [(200, "STALE")] * 5
    # The failing pair rests between attempts (5 s of real time here), so the model
    # was asked once, not once per request.
    assert model.calls == ["ETH-EUR", "ETH-EUR"]
    clock.now = START + TTL + GRACE
    past = client.get("/predict/ETH-EUR")
    assert past.status_code == 503 and past.headers["Retry-After"] == "1"


def test_a_failing_pair_is_not_recomputed_on_every_miss(
    client: FlaskClient, clock: Clock, model: SwitchModel
) -> None:
    model.failing = True
    statuses = [client.get("/predict/BTC-EUR").status_code for _ in range(5)]
    assert statuses == [503] * 5
    assert model.calls == ["BTC-EUR"]


def test_batch_reads_mark_stale_items_and_revalidate_them(
    app: Flask, client: FlaskClient, clock: Clock, model: SwitchModel
) -> None:
    client.get("/predict/ETH-EUR")
    clock.now = START + TTL + 1
    items = client.get("/predict?pairs=ETH-EUR,BTC-EUR").get_json()["items"]
    assert [item["status"] for item in items] == ["stale", "missing"]
    assert items[0]["prediction"]["stale"] is True
    _settle(app)
    assert model.calls == ["ETH-EUR", "ETH-EUR"]
    items = client.get("/predict?pairs=ETH-EUR").get_json()["items"]
    assert items[0]["status"] == "fresh"


def test_pairs_says_which_are_stale(client: FlaskClient, clock: Clock, model: SwitchModel) -> None:
    client.get("/predict/ETH-EUR")
    model.gate.clear()
    clock.now = START + TTL + 1
    (item,) = [p for p in client.get("/pairs").get_json()["pairs"] if p["cached"]]
    assert item["status"] == "stale" and item["fresh_for_seconds"] == 0
    model.gate.set()
    clock.now = START + TTL + GRACE + 1
    assert not any(p["cached"] for p in client.get("/pairs").get_json()["pairs"])


@pytest.mark.parametrize(
    ("remaining", "delta", "beta"), [(1.0, 1.0, 1.0), (3.0, 1.0, 1.0), (2.0, 0.5, 2.0)]
)
def test_xfetch_refreshes_with_probability_exp_minus_remaining_over_delta_beta(
    remaining: float, delta: float, beta: float
) -> None:
    draws = [(i + 1) / 100_000 for i in range(100_000)]  # uniform on (0, 1]
    share = sum(refresh_early(remaining, delta, beta, draw) for draw in draws) / len(draws)
    assert share == pytest.approx(math.exp(-remaining / (delta * beta)), abs=1e-4)


def test_xfetch_edges() -> None:
    assert refresh_early(0.0, 1.0, 1.0, 1.0)  # expiry reached: always
    assert not refresh_early(5.0, 1.0, 0.0, 1e-300)  # beta 0: never
    assert not refresh_early(5.0, 0.0, 1.0, 1e-300)  # no known compute time: never
    assert not refresh_early(5.0, 1.0, 1.0, 1.0)  # draw 1: log(1) = 0, never early


def test_an_early_refresh_keeps_a_hot_pair_from_ever_going_stale(
    app: Flask, client: FlaskClient, clock: Clock, model: SwitchModel
) -> None:
    cache = _cache(app)
    cache.limits = dataclasses.replace(cache.limits, early_refresh_beta=1.0)
    cache.draw = lambda: 0.999  # 1 - draw = 0.001: -log = 6.9, so 6.9 * delta * beta
    client.get("/predict/ETH-EUR")
    computed = model.calls.copy()
    # Far from expiry: no early refresh even with a small draw.
    clock.now = START + 1
    assert client.get("/predict/ETH-EUR").headers["X-Cache"] == "HIT"
    _settle(app)
    assert model.calls == computed
    # Close to expiry (within 6.9 x its compute time, here tiny): refreshed early.
    delta = client.get("/predict/ETH-EUR").get_json()["compute_seconds"]
    clock.now = START + TTL - delta
    answer = client.get("/predict/ETH-EUR")
    assert answer.headers["X-Cache"] == "HIT"
    _settle(app)
    assert model.calls == [*computed, "ETH-EUR"]
    clock.now = START + TTL + 0.0001
    assert client.get("/predict/ETH-EUR").headers["X-Cache"] == "HIT"  # never went stale
