"""The trained example, served: one artifact load per process, one estimator call per batch.

Two import strings build it:

- ``examples.sklearn_trend.model:SklearnTrendModel`` loads $SKLEARN_TREND_MODEL_PATH,
  else model.joblib beside this module: whatever train.py wrote there last.
- ``examples.sklearn_trend.model:sklearn-trend-<hash>`` loads that version and no
  other, from the copy ``sklearn-trend-<hash>.joblib`` that train.py writes beside
  model.joblib. A rollout records a version's import string, and any process may build
  the version from it later, so this is the string to roll out: retraining replaces
  model.joblib but never changes a versioned copy.

The version is the artifact's own, a hash of what decides its answers, so a retrained
artifact is a new version, and the same training gives the same version again.

Only load an artifact you trust. A joblib file is a pickle: loading it runs whatever
code the file names, with the service's rights. Train it yourself or take it from a
source you would take code from, kept where only the deploy can write; never a path a
request, an upload or another tenant can influence.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from examples.sklearn_trend.features import FEATURE_NAMES, MIN_PRICES, compute_features
from predictions.model import PriceWindow

ARTIFACT_ENV = "SKLEARN_TREND_MODEL_PATH"
DEFAULT_ARTIFACT = Path(__file__).resolve().parent / "model.joblib"
NAME = "sklearn-trend"
VERSION_PATTERN = re.compile(rf"{NAME}-[0-9a-f]{{12}}")

log = logging.getLogger(__name__)


def artifact_path() -> Path:
    """$SKLEARN_TREND_MODEL_PATH (relative to the working directory), else the default."""
    return Path(os.environ.get(ARTIFACT_ENV) or DEFAULT_ARTIFACT)


def versioned_path(version: str) -> Path:
    """Where train.py keeps the artifact of ``version``: beside artifact_path()."""
    return artifact_path().parent / f"{version}.joblib"


class SklearnTrendModel:
    """A Ridge regression on recent log returns and trend, loaded from a joblib file."""

    version: str

    def __init__(
        self, path: str | os.PathLike[str] | None = None, version: str | None = None
    ) -> None:
        """Load the artifact at ``path`` (default: artifact_path()); if ``version`` is
        given, refuse an artifact of any other version."""
        path = Path(path) if path is not None else artifact_path()
        if not path.is_file():
            raise FileNotFoundError(
                f"{ARTIFACT_ENV}: no model artifact at {path}; "
                f"train one with: python -m examples.sklearn_trend.train --out {path}"
            )
        # Trusted by deployment: see the module docstring. (ruff's S301 does not
        # cover joblib, but this is the same risk as pickle.load.)
        artifact = joblib.load(path)
        self.estimator, self.version, self.horizon_seconds = _unpack(artifact, path)
        if version is not None and self.version != version:
            raise ValueError(f"{path} holds model version {self.version}, not {version}")
        log.info("loaded model version=%s path=%s", self.version, path)

    def predict(self, pair: str, prices: PriceWindow, horizon_seconds: int | None = None) -> float:
        """The price ``horizon_seconds`` (the trained horizon) after the last price."""
        self._check_horizon(horizon_seconds)
        times, log_prices = _recent(pair, prices)
        (predicted,) = self._predict_rows(times[np.newaxis], log_prices[np.newaxis])
        if not (math.isfinite(predicted) and predicted > 0):
            raise ValueError(f"{pair}: the model gave {predicted!r}, not a price")
        return float(predicted)

    def predict_many(
        self, windows: Mapping[str, PriceWindow], horizon_seconds: int | None = None
    ) -> dict[str, float]:
        """Every pair's price from one estimator call; a pair it cannot price is left out."""
        self._check_horizon(horizon_seconds)
        pairs, times, log_prices = [], [], []
        for pair, window in windows.items():
            try:
                pair_times, pair_log_prices = _recent(pair, window)
            except ValueError as exc:  # this pair fails alone; the batch goes on
                log.warning("no prediction pair=%s error=%s", pair, exc)
                continue
            pairs.append(pair)
            times.append(pair_times)
            log_prices.append(pair_log_prices)
        if not pairs:
            return {}
        predicted = self._predict_rows(np.stack(times), np.stack(log_prices))
        result = {}
        for pair, price in zip(pairs, predicted.tolist(), strict=True):
            if math.isfinite(price) and price > 0:
                result[pair] = price
            else:
                log.warning("no prediction pair=%s error=the model gave %r", pair, price)
        return result

    def _predict_rows(self, times: np.ndarray, log_prices: np.ndarray) -> np.ndarray:
        change = self.estimator.predict(compute_features(times, log_prices))
        return np.exp(log_prices[:, -1] + change)  # type: ignore[no-any-return]

    def _check_horizon(self, horizon_seconds: int | None) -> None:
        if horizon_seconds is not None and horizon_seconds != self.horizon_seconds:
            raise ValueError(
                f"model {self.version} was trained for a {self.horizon_seconds} s horizon, "
                f"not {horizon_seconds} s: set PREDICTION_HORIZON_SECONDS="
                f"{self.horizon_seconds}, or retrain with "
                f"python -m examples.sklearn_trend.train --horizon-seconds {horizon_seconds}"
            )


def _unpack(artifact: Any, path: Path) -> tuple[Any, str, int]:
    """The estimator, version and horizon of an artifact, or a clear error."""
    if not isinstance(artifact, dict):
        raise ValueError(f"{path}: not a model artifact (a {type(artifact).__name__})")
    missing = {"model", "version", "horizon_seconds", "features"} - artifact.keys()
    if missing:
        raise ValueError(f"{path}: model artifact lacks {', '.join(sorted(missing))}")
    estimator, version, horizon = (
        artifact["model"],
        artifact["version"],
        artifact["horizon_seconds"],
    )
    if not callable(getattr(estimator, "predict", None)):
        raise ValueError(f"{path}: its 'model' has no predict method")
    if not isinstance(version, str) or not version:
        raise ValueError(f"{path}: its 'version' is not a non-empty string")
    if not isinstance(horizon, int) or horizon <= 0:
        raise ValueError(f"{path}: its 'horizon_seconds' is not a positive integer")
    if tuple(artifact["features"]) != FEATURE_NAMES:
        raise ValueError(
            f"{path}: trained on features {list(artifact['features'])}, but this code "
            f"computes {list(FEATURE_NAMES)}: retrain it"
        )
    return estimator, version, horizon


def _recent(pair: str, window: PriceWindow) -> tuple[np.ndarray, np.ndarray]:
    """The last MIN_PRICES times and log prices of a window, or why it cannot be used."""
    times = np.asarray(window.times, dtype=np.float64)
    prices = np.asarray(window.prices, dtype=np.float64)
    if times.ndim != 1 or times.shape != prices.shape:
        raise ValueError(f"{pair}: times and prices are not two arrays of one length")
    if len(prices) < MIN_PRICES:
        raise ValueError(f"{pair}: need {MIN_PRICES} prices, one a minute, got {len(prices)}")
    times, prices = times[-MIN_PRICES:], prices[-MIN_PRICES:]
    if not (np.isfinite(prices).all() and (prices > 0).all()):
        raise ValueError(f"{pair}: prices must be finite and positive")
    if not (np.diff(times) > 0).all():
        raise ValueError(f"{pair}: times must increase")
    return times, np.log(prices)


def __getattr__(name: str) -> type[SklearnTrendModel]:
    """``examples.sklearn_trend.model:<version>``: a class that loads that version."""
    if not VERSION_PATTERN.fullmatch(name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # Checked here, when the worker imports MODEL at start, so that a missing file
    # stops it there rather than failing every refresh.
    if not versioned_path(name).is_file():
        raise AttributeError(
            f"no artifact for model version {name} at {versioned_path(name)}: "
            "train it with python -m examples.sklearn_trend.train, or copy it there"
        )
    return _pinned(name)


@functools.cache
def _pinned(version: str) -> type[SklearnTrendModel]:
    class Pinned(SklearnTrendModel):
        def __init__(self) -> None:
            super().__init__(versioned_path(version), version)

    Pinned.__name__ = Pinned.__qualname__ = version
    return Pinned
