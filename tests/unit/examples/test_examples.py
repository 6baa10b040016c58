"""The example models in examples/, loaded and run the way the service runs them."""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from examples.sklearn_trend import model as sklearn_trend
from examples.sklearn_trend import train
from examples.sklearn_trend.features import FEATURE_NAMES, MIN_PRICES
from examples.template_model import TemplateModel
from predictions.model import LoadedModel, ModelLoadError, load_model
from predictions.model.market_data import PriceWindow, SyntheticMarketData
from predictions.model.predictor import PredictionFailed, Predictor
from tests.harness.doubles import ManualClock

ROOT = Path(__file__).resolve().parents[3]
NOW = 1_764_000_000.0
PAIRS = ("ETH-EUR", "BTC-USD", "SOL-USD", "DOGE-USD", "FOO-BAR")
TEMPLATE = "examples.template_model:TemplateModel"
SKLEARN_TREND = "examples.sklearn_trend.model:SklearnTrendModel"


def _train(out: Path, *args: str) -> str:
    """Run train.py's command line in this process; the version it wrote."""
    assert train.main(["--out", str(out), *args]) == 0
    return sklearn_trend.SklearnTrendModel(out).version


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("sklearn_trend")
    _train(directory / "model.joblib", "--seed", "0")
    return directory


@pytest.fixture
def artifact(trained_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The seed-0 artifact, where the model looks: as a deployment sets it."""
    path = trained_dir / "model.joblib"
    monkeypatch.setenv(sklearn_trend.ARTIFACT_ENV, str(path))
    return path


@pytest.fixture
def joblib_loads(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every joblib.load from now on, by path."""
    loads: list[Path] = []
    real_load = joblib.load

    def counting_load(filename: Any, *args: Any, **kwargs: Any) -> Any:
        loads.append(Path(filename))
        return real_load(filename, *args, **kwargs)

    monkeypatch.setattr(joblib, "load", counting_load)
    return loads


def _predictor(model: LoadedModel, horizon_seconds: int = 300) -> Predictor:
    return Predictor(
        models=model,
        market_data=SyntheticMarketData(),
        horizon_seconds=horizon_seconds,
        ttl_seconds=30,
        clock=ManualClock(now=NOW),
    )


def _windows() -> dict[str, PriceWindow]:
    source = SyntheticMarketData()
    return {pair: source.recent_prices(pair, NOW) for pair in PAIRS}


@pytest.mark.parametrize("import_string", [TEMPLATE, SKLEARN_TREND])
def test_each_example_serves_through_the_predictor(artifact: Path, import_string: str) -> None:
    model = load_model(import_string)
    predictor = _predictor(model)
    one_by_one = {pair: predictor.compute(pair) for pair in PAIRS}
    batch, failures = predictor.compute_many(PAIRS)
    assert failures == {}
    assert [p.pair for p in batch] == list(PAIRS)
    for prediction in batch:
        alone = one_by_one[prediction.pair]
        assert math.isfinite(prediction.predicted_price) and prediction.predicted_price > 0
        assert prediction.predicted_price == pytest.approx(alone.predicted_price, rel=1e-12)
        assert prediction.model_version == alone.model_version == model.version
        # A plausible five-minute forecast: within 1 % of the last price.
        last = SyntheticMarketData().recent_prices(prediction.pair, NOW).prices[-1]
        assert prediction.predicted_price == pytest.approx(last, rel=0.01)


def test_the_template_is_the_naive_forecast() -> None:
    model = load_model(TEMPLATE)
    assert model.version == "naive-last-price-1"
    assert model.batches
    windows = _windows()
    assert model.predict_many(windows, 300) == {
        pair: float(window.prices[-1]) for pair, window in windows.items()
    }


def test_the_template_fails_a_bad_window_alone() -> None:
    empty = PriceWindow(times=np.array([]), prices=np.array([]))
    with pytest.raises(ValueError, match="ETH-EUR: no prices"):
        TemplateModel().predict("ETH-EUR", empty)
    predicted = TemplateModel().predict_many({"ETH-EUR": empty} | _windows())
    assert set(predicted) == set(PAIRS)


def test_the_sklearn_version_comes_from_the_artifact(artifact: Path) -> None:
    model = load_model(SKLEARN_TREND)
    stored = joblib.load(artifact)
    assert model.version == stored["version"]
    assert sklearn_trend.VERSION_PATTERN.fullmatch(model.version)
    assert stored["horizon_seconds"] == 300
    assert stored["features"] == list(FEATURE_NAMES)


def test_the_artifact_is_loaded_once_per_process(artifact: Path, joblib_loads: list[Path]) -> None:
    predictor = _predictor(load_model(SKLEARN_TREND))
    for _ in range(3):
        for pair in PAIRS:
            predictor.compute(pair)
        assert predictor.compute_many(PAIRS)[1] == {}
    assert joblib_loads == [artifact]


class CountingEstimator:
    """Wraps the fitted estimator, counting its predict calls and their rows."""

    def __init__(self, estimator: Any) -> None:
        self.estimator = estimator
        self.batch_sizes: list[int] = []

    def predict(self, features: np.ndarray) -> Any:
        self.batch_sizes.append(len(features))
        return self.estimator.predict(features)


def test_predict_many_is_one_estimator_call_equal_to_predict(artifact: Path) -> None:
    model = sklearn_trend.SklearnTrendModel()
    counting = model.estimator = CountingEstimator(model.estimator)
    windows = _windows()
    batch = model.predict_many(windows, horizon_seconds=300)
    assert counting.batch_sizes == [len(PAIRS)]
    for pair, window in windows.items():
        assert batch[pair] == pytest.approx(model.predict(pair, window), rel=1e-12)
        assert isinstance(batch[pair], float)


def test_a_window_it_cannot_use_fails_its_pair_alone(artifact: Path) -> None:
    model = sklearn_trend.SklearnTrendModel()
    good = _windows()
    times = good["ETH-EUR"].times
    broken = {
        "SHORT-USD": PriceWindow(times=times[-(MIN_PRICES - 1) :], prices=np.ones(MIN_PRICES - 1)),
        "NAN-USD": PriceWindow(times=times, prices=np.where(times == times[-3], np.nan, 1.0)),
        "ZERO-USD": PriceWindow(times=times, prices=np.where(times == times[-3], 0.0, 1.0)),
        "BACKWARDS-USD": PriceWindow(times=times[::-1], prices=np.ones(len(times))),
    }
    assert set(model.predict_many(good | broken)) == set(good)
    for pair, window in broken.items():
        with pytest.raises(ValueError, match=pair):
            model.predict(pair, window)


def test_a_horizon_it_was_not_trained_for_is_refused(artifact: Path) -> None:
    predictor = _predictor(load_model(SKLEARN_TREND), horizon_seconds=600)
    message = "trained for a 300 s horizon, not 600 s: set PREDICTION_HORIZON_SECONDS=300"
    with pytest.raises(PredictionFailed, match=message):
        predictor.compute("ETH-EUR")
    predictions, failures = predictor.compute_many(PAIRS)
    assert predictions == []
    assert set(failures) == set(PAIRS)
    assert all(message in reason for reason in failures.values())
    with pytest.raises(ValueError, match="--horizon-seconds 600"):
        sklearn_trend.SklearnTrendModel().predict("ETH-EUR", _windows()["ETH-EUR"], 600)


def test_a_missing_artifact_says_how_to_train_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(sklearn_trend.ARTIFACT_ENV, str(tmp_path / "missing.joblib"))
    with pytest.raises(ModelLoadError, match="python -m examples.sklearn_trend.train --out"):
        load_model(SKLEARN_TREND)


def test_the_default_artifact_sits_beside_the_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(sklearn_trend.ARTIFACT_ENV, raising=False)
    expected = Path(sklearn_trend.__file__).resolve().parent / "model.joblib"
    assert sklearn_trend.artifact_path() == expected


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"features": ["price"]}, "trained on features \\['price'\\].*retrain it"),
        ({"horizon_seconds": "300"}, "'horizon_seconds' is not a positive integer"),
        ({"version": ""}, "'version' is not a non-empty string"),
        ({"model": None}, "has no predict method"),
    ],
)
def test_an_artifact_for_other_code_is_refused(
    artifact: Path, tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    path = tmp_path / "other.joblib"
    joblib.dump(joblib.load(artifact) | change, path)
    with pytest.raises(ValueError, match=message):
        sklearn_trend.SklearnTrendModel(path)


def test_a_file_that_is_no_artifact_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "list.joblib"
    joblib.dump([1, 2], path)
    with pytest.raises(ValueError, match="not a model artifact"):
        sklearn_trend.SklearnTrendModel(path)


def test_training_is_deterministic_and_its_data_decides_the_version(
    trained_dir: Path, tmp_path: Path
) -> None:
    seed_0 = sklearn_trend.SklearnTrendModel(trained_dir / "model.joblib").version
    assert _train(tmp_path / "again.joblib", "--seed", "0") == seed_0
    seed_1 = _train(tmp_path / "seed1.joblib", "--seed", "1")
    assert seed_1 != seed_0
    ten_minutes = _train(tmp_path / "h600.joblib", "--horizon-seconds", "600")
    assert ten_minutes not in (seed_0, seed_1)
    model = sklearn_trend.SklearnTrendModel(tmp_path / "h600.joblib")
    window = _windows()["ETH-EUR"]
    assert math.isfinite(model.predict("ETH-EUR", window, horizon_seconds=600))
    with pytest.raises(ValueError, match="trained for a 600 s horizon"):
        model.predict("ETH-EUR", window, horizon_seconds=300)


def test_training_refuses_a_horizon_between_minutes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        train.main(["--out", str(tmp_path / "m.joblib"), "--horizon-seconds", "90"])
    assert "whole number of minutes" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def two_versions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """Seed 0 trained, then seed 1 into the same place: model.joblib now holds seed 1."""
    latest = tmp_path / "model.joblib"
    monkeypatch.setenv(sklearn_trend.ARTIFACT_ENV, str(latest))
    first = _train(latest, "--seed", "0")
    second = _train(latest, "--seed", "1")
    return first, second


def test_a_version_stays_buildable_after_retraining(two_versions: tuple[str, str]) -> None:
    # What a rollout relies on: the import string it recorded for a version builds
    # that version in any process, later, whatever model.joblib holds by then.
    first, second = two_versions
    assert load_model(SKLEARN_TREND).version == second
    for version in (first, second):
        model = load_model(f"examples.sklearn_trend.model:{version}")
        assert model.version == version
        assert math.isfinite(_predictor(model).compute("ETH-EUR").predicted_price)


def test_a_version_with_no_artifact_or_the_wrong_one_is_refused(
    two_versions: tuple[str, str], tmp_path: Path
) -> None:
    first, second = two_versions
    with pytest.raises(ModelLoadError, match="no artifact for model version sklearn-trend-0"):
        load_model("examples.sklearn_trend.model:sklearn-trend-000000000000")
    with pytest.raises(ModelLoadError, match="has no attribute 'NoSuchModel'"):
        load_model("examples.sklearn_trend.model:NoSuchModel")
    # A versioned file overwritten by another version is caught, not served as it.
    (tmp_path / f"{second}.joblib").replace(tmp_path / f"{first}.joblib")
    with pytest.raises(ModelLoadError, match=f"holds model version {second}, not {first}"):
        load_model(f"examples.sklearn_trend.model:{first}")


def test_examples_use_only_the_model_contract() -> None:
    # A user's model depends on predictions/ (the contract, PriceWindow) and its own
    # libraries, never on the service around it.
    imported: set[str] = set()
    for path in (ROOT / "examples").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
    assert imported & {"api", "worker", "flask", "celery", "redis", "beat_schedule"} == set()
