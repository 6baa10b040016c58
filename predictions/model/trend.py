"""The default model: MODEL=predictions.model:LogLinearTrendModel."""

from __future__ import annotations

import numpy as np

from predictions.model.market_data import PriceWindow


class LogLinearTrendModel:
    """Least-squares line through log prices, extrapolated to the horizon.

    A trend on log prices is scale-free (the same fit for BTC at 65,000 and DOGE at
    0.15) and can never predict a negative price.
    """

    version = "log-linear-trend-1"

    def predict(self, pair: str, prices: PriceWindow, horizon_seconds: int = 300) -> float:
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
