"""Train the example model on the synthetic feed and save it with joblib.

    python -m examples.sklearn_trend.train [--out PATH] [--seed N] [--horizon-seconds S]

It writes the artifact to PATH and a copy named by its version beside it (see model.py).

A Ridge regression predicts the log change of a pair's price over the horizon from the
features in features.py. The data is drawn from a fixed past year of the synthetic
feed, so the same seed gives the same model, and so the same version, on any day; a
different seed draws other stretches of history and gives another model and version.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
from numpy.lib.stride_tricks import sliding_window_view
from sklearn.linear_model import Ridge

from examples.sklearn_trend.features import FEATURE_NAMES, MIN_PRICES, MINUTE, compute_features
from examples.sklearn_trend.model import ARTIFACT_ENV, DEFAULT_ARTIFACT, NAME, artifact_path
from predictions.model import SyntheticMarketData

PAIRS = ("BTC-USD", "ETH-EUR", "SOL-USD", "XRP-EUR", "DOGE-USD")
# Stretches of history are drawn from 2024, never from the clock.
PERIOD_START = 1_704_067_200  # 2024-01-01T00:00:00Z
PERIOD_MINUTES = 366 * 24 * 60
STRETCHES_PER_PAIR = 4
SAMPLES_PER_STRETCH = 1_440  # one a minute: a day


def training_data(
    seed: int, horizon_seconds: int, pairs: Sequence[str] = PAIRS
) -> tuple[np.ndarray, np.ndarray]:
    """Features and targets: log(price ``horizon_seconds`` later / last price)."""
    rng = np.random.default_rng(seed)
    horizon = horizon_seconds // MINUTE
    # Each sample needs MIN_PRICES prices and the price `horizon` minutes after the last:
    # the feed's later minutes, read from one window long enough for the whole stretch.
    minutes = SAMPLES_PER_STRETCH + MIN_PRICES - 1 + horizon
    feed = SyntheticMarketData(window_minutes=minutes)
    features, targets = [], []
    for pair in pairs:
        for end_minute in rng.integers(minutes, PERIOD_MINUTES, size=STRETCHES_PER_PAIR):
            window = feed.recent_prices(pair, PERIOD_START + int(end_minute) * MINUTE)
            log_prices = np.log(window.prices)
            features.append(
                compute_features(
                    sliding_window_view(window.times[:-horizon], MIN_PRICES),
                    sliding_window_view(log_prices[:-horizon], MIN_PRICES),
                )
            )
            targets.append(
                log_prices[MIN_PRICES - 1 + horizon :] - log_prices[MIN_PRICES - 1 : -horizon]
            )
    return np.concatenate(features), np.concatenate(targets)


def train(
    seed: int = 0, horizon_seconds: int = 300, pairs: Sequence[str] = PAIRS
) -> dict[str, Any]:
    """The artifact model.py loads: the fitted estimator, its version and what it expects."""
    x, y = training_data(seed, horizon_seconds, pairs)
    estimator = Ridge(alpha=1.0).fit(x, y)
    return {
        "model": estimator,
        "version": fingerprint(estimator, horizon_seconds),
        "horizon_seconds": horizon_seconds,
        "features": list(FEATURE_NAMES),
        # For people reading the artifact; model.py does not depend on these.
        "trained_on": {
            "source": SyntheticMarketData.name,
            "pairs": list(pairs),
            "seed": seed,
            "samples": len(y),
            "r2": round(float(estimator.score(x, y)), 6),
            "scikit_learn": sklearn.__version__,
        },
    }


def fingerprint(estimator: Ridge, horizon_seconds: int) -> str:
    """``sklearn-trend-<hash>`` of everything that decides the answers, and nothing else."""
    digest = hashlib.sha256()
    recipe = {
        "estimator": type(estimator).__name__,
        "params": estimator.get_params(),
        "features": FEATURE_NAMES,
        "horizon_seconds": horizon_seconds,
    }
    digest.update(json.dumps(recipe, sort_keys=True).encode())
    for fitted in (estimator.coef_, estimator.intercept_):
        digest.update(np.ascontiguousarray(fitted, dtype=np.float64).tobytes())
    return f"{NAME}-{digest.hexdigest()[:12]}"


def save(artifact: dict[str, Any], path: Path) -> None:
    """Write the artifact whole or not at all: a process loading it never sees half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        joblib.dump(artifact, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _horizon(raw: str) -> int:
    seconds = int(raw)
    if seconds <= 0 or seconds % MINUTE:
        raise argparse.ArgumentTypeError(
            f"a positive whole number of minutes in seconds, got {raw}"
        )
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.sklearn_trend.train",
        description="Train the example model on the synthetic feed and save it with joblib.",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=f"where to write the artifact (default: ${ARTIFACT_ENV}, else {DEFAULT_ARTIFACT})",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="picks the stretches of history trained on (default: %(default)s)",
    )
    parser.add_argument(
        "--horizon-seconds",
        type=_horizon,
        default=300,
        help="the PREDICTION_HORIZON_SECONDS it will serve (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    out: Path = args.out or artifact_path()
    artifact = train(args.seed, args.horizon_seconds)
    version = artifact["version"]
    # The versioned copy is what a rollout names: a later training replaces `out`,
    # never it (same version, same content).
    pinned = out.parent / f"{version}.joblib"
    save(artifact, out)
    save(artifact, pinned)
    env = "" if out.resolve() == DEFAULT_ARTIFACT else f"{ARTIFACT_ENV}={out} "
    print(
        f"wrote {out} and {pinned}: version {version}, horizon {args.horizon_seconds} s, "
        f"{artifact['trained_on']['samples']} samples\n"
        f"serve the latest:  {env}MODEL=examples.sklearn_trend.model:SklearnTrendModel\n"
        f"serve or roll out this version only:  "
        f"{env}MODEL=examples.sklearn_trend.model:{version}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
