"""The model's inputs, computed the same way in training and in serving."""

from __future__ import annotations

import numpy as np

MINUTE = 60
# A log return of 0.0001 is one basis point. Features in basis points are of order 1,
# so Ridge's default penalty (alpha=1) is mild rather than crushing every coefficient.
BASIS_POINTS = 1e4
RETURNS = 5
TREND_MINUTES = 30
# The prices a window needs, the newest TREND_MINUTES of which are used.
MIN_PRICES = TREND_MINUTES

FEATURE_NAMES: tuple[str, ...] = (
    *(f"log_return_bp_{age}m_ago" for age in range(RETURNS - 1, -1, -1)),
    f"trend_bp_per_minute_{TREND_MINUTES}m",
)


def compute_features(times: np.ndarray, log_prices: np.ndarray) -> np.ndarray:
    """Rows of features from rows of the last MIN_PRICES times and log prices.

    ``times`` and ``log_prices`` have shape (windows, MIN_PRICES), oldest first. The
    returns are minute to minute (the feed is one price a minute); the trend is the
    least-squares slope of log price over time, so a gap in the data bends it less.
    """
    returns = np.diff(log_prices[:, -(RETURNS + 1) :], axis=1)
    x = times - times[:, -1:]
    dx = x - x.mean(axis=1, keepdims=True)
    dy = log_prices - log_prices.mean(axis=1, keepdims=True)
    slope_per_second = (dx * dy).sum(axis=1) / (dx * dx).sum(axis=1)
    return np.column_stack([returns, slope_per_second * MINUTE]) * BASIS_POINTS
