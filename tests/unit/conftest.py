from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from predictions.market_data import SyntheticMarketData
from predictions.predictor import Predictor
from predictions.settings import Settings
from predictions.store import PredictionStore
from tests.harness.doubles import CountingModel


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
    return PredictionStore(redis_client)


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
    )


@pytest.fixture
def app(settings: Settings, redis_client: fakeredis.FakeRedis, predictor: Predictor) -> Flask:
    return create_app(settings, redis_client, predictor)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
