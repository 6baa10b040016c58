"""One model, written three ways: each works unchanged as MODEL.

``prices`` is the sequence of a pair's closing prices, oldest first (one a minute), so
code written for a plain list, for a numpy array, or for the full contract
(``prices.prices`` and ``prices.times``) all run as they are::

    MODEL=examples.model_styles:ListStyleModel
    MODEL=examples.model_styles:NumpyStyleModel
    MODEL=examples.model_styles:ContractStyleModel

All three predict the mean of the last five prices, so their answers can be compared.
"""

from __future__ import annotations

import numpy as np

from predictions.model import PriceWindow

RECENT = 5


class ListStyleModel:
    """Written for a plain list of floats: len, indexing, slicing, iteration."""

    version = "style-list-1"

    def predict(self, pair: str, prices: PriceWindow) -> float:
        last = prices[-1] if len(prices) else 100.0
        recent = prices[-RECENT:]
        total = 0.0
        for price in recent:
            total += price
        return total / len(recent) if len(recent) else last


class NumpyStyleModel:
    """Written for a numpy array: numpy.asarray(prices) is the prices."""

    version = "style-numpy-1"

    def predict(self, pair: str, prices: PriceWindow) -> float:
        closes = np.asarray(prices, dtype=np.float64)
        return float(np.mean(closes[-RECENT:]))


class ContractStyleModel:
    """Written against the full contract: prices.prices and prices.times, numpy arrays."""

    version = "style-contract-1"

    def predict(self, pair: str, prices: PriceWindow, horizon_seconds: int = 300) -> float:
        if len(prices.times) and prices.times[-1] - prices.times[0] < 0:
            raise ValueError(f"{pair}: prices are not oldest first")
        return float(prices.prices[-RECENT:].mean())
