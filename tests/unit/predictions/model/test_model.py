from __future__ import annotations

import math

import numpy as np
import pytest

from predictions.model import LogLinearTrendModel, Model, ModelLoadError, load_model
from predictions.model.market_data import (
    PriceWindow,
    SyntheticMarketData,
    anchor_price,
    build_market_data,
)
from tests.harness.doubles import HostClock

NOW = 1_764_000_000.0


def test_synthetic_prices_are_deterministic_per_pair_and_minute() -> None:
    source = SyntheticMarketData()
    first = source.recent_prices("ETH-EUR", NOW)
    again = SyntheticMarketData().recent_prices("ETH-EUR", NOW + 1)  # same minute
    assert np.array_equal(first.prices, again.prices)
    other = source.recent_prices("BTC-EUR", NOW)
    assert not np.allclose(
        first.prices / anchor_price("ETH-EUR"), other.prices / anchor_price("BTC-EUR")
    )


def test_a_later_window_continues_the_same_walk() -> None:
    source = SyntheticMarketData()
    now = source.recent_prices("ETH-EUR", NOW)
    later = source.recent_prices("ETH-EUR", NOW + 600)  # ten minutes on
    assert np.allclose(now.prices[10:], later.prices[:-10])
    assert later.times[-1] - now.times[-1] == 600


def test_synthetic_prices_stay_plausible() -> None:
    window = SyntheticMarketData().recent_prices("BTC-USD", NOW)
    assert len(window.prices) == 60
    assert np.all(np.diff(window.times) == 60)
    assert 0.7 * 65_000 < window.prices.min() <= window.prices.max() < 1.3 * 65_000
    assert 2_000 < anchor_price("ETH-EUR") < 4_000
    assert 0.01 <= anchor_price("FOO-USD") <= 1_000


def test_trend_model_extrapolates_a_log_linear_trend() -> None:
    times = np.arange(60, dtype=np.float64) * 60
    growth = 1e-5  # per second
    window = PriceWindow(times=times, prices=100 * np.exp(growth * times))
    predicted = LogLinearTrendModel().predict("ETH-EUR", window, 300)
    assert predicted == pytest.approx(100 * math.exp(growth * (times[-1] + 300)), rel=1e-9)


def test_trend_model_needs_two_prices() -> None:
    window = PriceWindow(times=np.array([0.0]), prices=np.array([1.0]))
    with pytest.raises(ValueError, match="two prices"):
        LogLinearTrendModel().predict("ETH-EUR", window, 300)


def test_load_model_instantiates_classes_and_accepts_instances() -> None:
    loaded = load_model("predictions.model:LogLinearTrendModel")
    assert isinstance(loaded.model, LogLinearTrendModel)
    assert loaded.version == LogLinearTrendModel.version
    assert isinstance(load_model("tests.harness.doubles:CountingModel").model, Model)


@pytest.mark.parametrize(
    "import_string",
    ["no.such.module:Model", "predictions.model:NoSuchThing", "predictions.model:ModelLoadError"],
)
def test_load_model_errors_name_the_setting(import_string: str) -> None:
    with pytest.raises(ModelLoadError, match="MODEL"):
        load_model(import_string)


def test_unknown_market_data_is_refused() -> None:
    with pytest.raises(ValueError, match="MARKET_DATA"):
        build_market_data("kraken", 5, HostClock())
