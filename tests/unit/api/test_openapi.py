"""The API against its own OpenAPI document: schemathesis, with every check it has."""

from __future__ import annotations

from typing import Any

import fakeredis
import orjson
import schemathesis
from hypothesis import HealthCheck, settings

from api import create_app
from predictions.model.market_data import SyntheticMarketData
from predictions.model.predictor import Predictor
from predictions.settings import Settings
from tests.harness.doubles import CountingModel, HostClock

SETTINGS = Settings(pairs=("ETH-EUR", "BTC-USD"), simulated_model_latency_seconds=0)
REDIS = fakeredis.FakeRedis()
MODEL = CountingModel()
APP = create_app(
    SETTINGS,
    REDIS,
    Predictor(
        MODEL, SyntheticMarketData(), 300, SETTINGS.prediction_ttl_seconds, clock=HostClock()
    ),
)
schema = schemathesis.openapi.from_wsgi("/openapi.json", APP)


@schema.parametrize()
@settings(max_examples=60, suppress_health_check=list(HealthCheck), deadline=None)
def test_every_answer_matches_the_document(case: schemathesis.Case[Any]) -> None:
    keys_before, computations_before = REDIS.dbsize(), len(MODEL.calls)
    response = case.call_and_validate()
    assert response.status_code < 500
    if response.status_code >= 400:
        body = orjson.loads(response.content)
        assert set(body["error"]) == {"status", "code", "message"}
        # A rejected request changes nothing.
        assert (REDIS.dbsize(), len(MODEL.calls)) == (keys_before, computations_before)


def test_ten_thousand_unknown_pairs_compute_nothing_and_write_nothing() -> None:
    client = APP.test_client()
    # Pairs asked by the test before: sent now, or the flusher's thread would write
    # them (creating pc:asked) while this test runs.
    APP.extensions["predictions"].asked.flush()
    before = REDIS.dbsize(), len(MODEL.calls)
    for i in range(10_000):
        response = client.get(f"/predict/X{i:05d}-EUR")
        assert response.status_code == 404
    assert (REDIS.dbsize(), len(MODEL.calls)) == before


def test_the_document_is_served() -> None:
    document = APP.test_client().get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {
        "/predict/{pair}",
        "/predict",
        "/pairs",
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
    }
