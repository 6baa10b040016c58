from __future__ import annotations

import pytest

from predictions.market_data import SyntheticMarketData
from predictions.model import LogLinearTrendModel, Model
from predictions.predictor import PredictionFailed, Predictor
from predictions.settings import Settings
from tests.harness.doubles import FailingModel, NanModel


def _predictor(model: Model, **kwargs: object) -> Predictor:
    return Predictor(model, SyntheticMarketData(), horizon_seconds=300, ttl_seconds=60, **kwargs)  # type: ignore[arg-type]


def test_compute_stamps_expiry_source_and_version() -> None:
    clock = iter([1_000.0, 1_000.4567])
    prediction = _predictor(LogLinearTrendModel(), clock=lambda: next(clock)).compute("ETH-EUR")
    assert prediction.pair == "ETH-EUR"
    assert prediction.computed_at == 1_000.457
    assert prediction.fresh_until == 1_060.457
    assert prediction.horizon_seconds == 300
    assert prediction.model_version == "log-linear-trend-1"
    assert prediction.data_source == "synthetic"
    assert 1_000 < prediction.predicted_price < 10_000


def test_simulated_latency_is_spent_before_the_model_runs() -> None:
    slept: list[float] = []
    _predictor(LogLinearTrendModel(), simulated_latency_seconds=0.75, sleep=slept.append).compute(
        "ETH-EUR"
    )
    assert slept == [0.75]


@pytest.mark.parametrize("model", [FailingModel(), NanModel()])
def test_a_broken_model_fails_loudly_with_the_pair(
    model: Model, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(PredictionFailed, match="ETH-EUR"):
        _predictor(model).compute("ETH-EUR")
    assert "prediction failed pair=ETH-EUR" in caplog.text


def test_from_settings_loads_the_configured_model() -> None:
    settings = Settings(model="tests.harness.doubles:CountingModel", prediction_horizon_seconds=60)
    predictor = Predictor.from_settings(settings)
    assert predictor.models.default_model().version == "counting-1"
    assert predictor.horizon_seconds == 60
    assert predictor.simulated_latency_seconds == 1.0
