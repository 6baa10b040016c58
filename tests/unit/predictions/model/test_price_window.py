"""PriceWindow is the sequence of closing prices: list- and numpy-style models work."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from examples.model_styles import ContractStyleModel, ListStyleModel, NumpyStyleModel
from predictions.model import load_model
from predictions.model.market_data import PriceWindow, SyntheticMarketData
from predictions.model.predictor import Predictor
from tests.harness.doubles import ManualClock

NOW = 1_764_000_000.0


def _window() -> PriceWindow:
    return PriceWindow(times=np.array([60.0, 120.0, 180.0]), prices=np.array([1.0, 2.0, 4.0]))


def test_window_behaves_as_the_sequence_of_prices() -> None:
    window = _window()
    assert len(window) == 3
    assert window[0] == 1.0 and window[-1] == 4.0
    assert isinstance(window[-1], float)
    np.testing.assert_array_equal(window[1:], [2.0, 4.0])
    assert list(window) == [1.0, 2.0, 4.0]
    assert 2.0 in window and window.index(4.0) == 2
    assert list(reversed(window)) == [4.0, 2.0, 1.0]
    np.testing.assert_array_equal(np.asarray(window), [1.0, 2.0, 4.0])
    np.testing.assert_array_equal(np.log(window), np.log([1.0, 2.0, 4.0]))
    assert np.mean(window) == pytest.approx(7 / 3)
    assert sum(window) / len(window) == pytest.approx(7 / 3)
    np.testing.assert_array_equal(window.times, [60.0, 120.0, 180.0])
    with pytest.raises(IndexError):
        window[3]


def test_asarray_copy_does_not_alias() -> None:
    window = _window()
    copied = np.array(window, copy=True)
    copied[0] = 99.0
    assert window[0] == 1.0


def test_empty_window_is_falsy_and_a_list_style_model_falls_back() -> None:
    empty = PriceWindow(times=np.array([]), prices=np.array([]))
    assert len(empty) == 0 and not empty
    assert ListStyleModel().predict("ETH-EUR", empty) == 100.0


def test_the_three_model_styles_agree_through_load_model() -> None:
    window = SyntheticMarketData().recent_prices("ETH-EUR", NOW)
    expected = float(window.prices[-5:].mean())
    for model in (ListStyleModel, NumpyStyleModel, ContractStyleModel):
        name = f"examples.model_styles:{model.__name__}"
        assert load_model(name).predict("ETH-EUR", window, 300) == pytest.approx(expected)


class _NumpyScalarModel:
    version = "numpy-scalar-1"

    def __init__(self, kind: type) -> None:
        self.kind = kind

    def predict(self, pair: str, prices: PriceWindow) -> object:
        return self.kind(np.asarray(prices)[-1])


@pytest.mark.parametrize("kind", [np.float64, np.float32])
def test_a_numpy_scalar_answer_is_stored_as_a_plain_float(kind: type) -> None:
    """np.mean(prices) is a numpy.float64: it must reach Redis as JSON, not fail the batch."""
    predictor = Predictor(
        _NumpyScalarModel(kind),  # type: ignore[arg-type]
        SyntheticMarketData(),
        horizon_seconds=300,
        ttl_seconds=60,
        clock=ManualClock(now=NOW),
    )
    for prediction in (predictor.compute("ETH-EUR"), *predictor.compute_many(["BTC-EUR"])[0]):
        assert type(prediction.predicted_price) is float
        assert orjson.loads(prediction.to_json())["predicted_price"] > 0
