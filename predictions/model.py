"""The model interface, the default model, and loading a model by import string."""

from __future__ import annotations

import importlib
from typing import Protocol, runtime_checkable

import numpy as np

from predictions.market_data import PriceWindow


@runtime_checkable
class Model(Protocol):
    """What the worker and the API's miss path call, through Predictor.compute.

    ``version`` names the model in every prediction it makes; ``predict`` returns the
    price of ``pair`` ``horizon_seconds`` after the last price in ``prices``.
    """

    version: str

    def predict(self, pair: str, prices: PriceWindow, horizon_seconds: int) -> float:
        """Predict one price; any exception, NaN or non-positive value is a failure."""
        ...


class LogLinearTrendModel:
    """Least-squares line through log prices, extrapolated to the horizon.

    A trend on log prices is scale-free (the same fit for BTC at 65,000 and DOGE at
    0.15) and can never predict a negative price.
    """

    version = "log-linear-trend-1"

    def predict(self, pair: str, prices: PriceWindow, horizon_seconds: int) -> float:
        if len(prices.prices) < 2:
            raise ValueError(f"{pair}: need at least two prices, got {len(prices.prices)}")
        # Seconds relative to the last price keep the fit well conditioned. The
        # closed-form least squares line is what np.polyfit(x, y, 1) computes, without
        # its general machinery (a tenth of the time, which counts at 10,000 pairs).
        x = prices.times - prices.times[-1]
        y = np.log(prices.prices)
        dx = x - x.mean()
        slope = float(dx @ (y - y.mean())) / float(dx @ dx)
        intercept = float(y.mean()) - slope * float(x.mean())
        return float(np.exp(intercept + slope * horizon_seconds))


class ModelLoadError(ValueError):
    """The MODEL import string does not name a usable model."""


def load_model(import_string: str) -> Model:
    """Import ``package.module:attribute``; a class is instantiated without arguments."""
    module_name, _, attribute = import_string.partition(":")
    try:
        target = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(f"MODEL: cannot import {import_string!r}: {exc}") from exc
    model = target() if isinstance(target, type) else target
    if not isinstance(model, Model) or not isinstance(model.version, str):
        raise ModelLoadError(
            f"MODEL: {import_string!r} has no string 'version' and 'predict' method"
        )
    return model
