from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from predictions.cache.store import PredictionStore
from predictions.model.market_data import SyntheticMarketData
from predictions.model.predictor import Predictor
from predictions.settings import Settings
from predictions.wiring import Wiring
from tests.harness.doubles import CountingModel, HostClock


@pytest.fixture
def settings() -> Settings:
    return Settings(
        pairs=("ETH-EUR", "BTC-EUR", "ETH-USD", "BTC-USD"),
        prediction_ttl_seconds=30,
        refresh_interval_seconds=10,
        simulated_model_latency_seconds=0,
    )


@pytest.fixture
def redis_client() -> Iterator[fakeredis.FakeRedis]:
    client = fakeredis.FakeRedis()
    yield client
    client.flushall()


@pytest.fixture
def store(redis_client: fakeredis.FakeRedis) -> PredictionStore:
    return PredictionStore(redis_client, HostClock())


@pytest.fixture
def model() -> CountingModel:
    return CountingModel()


@pytest.fixture
def predictor(settings: Settings, model: CountingModel) -> Predictor:
    return Predictor(
        models=model,
        market_data=SyntheticMarketData(),
        horizon_seconds=settings.prediction_horizon_seconds,
        ttl_seconds=settings.prediction_ttl_seconds,
        clock=HostClock(),
    )


@pytest.fixture
def app(settings: Settings, redis_client: fakeredis.FakeRedis, predictor: Predictor) -> Flask:
    return create_app(settings, redis_client, predictor)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def wiring_of(settings: Settings, store: PredictionStore, predictor: Predictor) -> Wiring:
    """A process's objects around a given store and predictor (the worker's, in tests)."""
    return Wiring(
        settings=settings,
        redis=store.redis,
        clock=store.clock,
        store=store,
        given_predictor=predictor,
    )


@pytest.fixture
def wiring(settings: Settings, store: PredictionStore, predictor: Predictor) -> Wiring:
    return wiring_of(settings, store, predictor)
