from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import fakeredis
import pytest

from predictions.model import LogLinearTrendModel, Model
from predictions.model.market_data import SyntheticMarketData
from predictions.model.predictor import PredictionFailed, Predictor
from predictions.settings import Settings
from predictions.wiring import wire
from tests.harness.doubles import CountingModel, FailingModel, HostClock, ManualClock, NanModel


def _predictor(model: Model, **kwargs: object) -> Predictor:
    options: dict[str, object] = {"clock": HostClock(), **kwargs}
    return Predictor(model, SyntheticMarketData(), horizon_seconds=300, ttl_seconds=60, **options)  # type: ignore[arg-type]


def test_compute_stamps_expiry_source_and_version() -> None:
    clock = ManualClock(now=1_000.0)
    model = LogLinearTrendModel()
    predict = model.predict

    def slow_predict(*args: object, **kwargs: object) -> float:
        clock.advance(0.4567)  # the model takes a while: the stamp is when it is done
        return predict(*args, **kwargs)  # type: ignore[arg-type]

    model.predict = slow_predict  # type: ignore[method-assign]
    prediction = _predictor(model, clock=clock).compute("ETH-EUR")
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


def test_the_wiring_builds_the_configured_model() -> None:
    settings = Settings(model="tests.harness.doubles:CountingModel", prediction_horizon_seconds=60)
    predictor = wire(settings, role="test", redis_client=fakeredis.FakeRedis()).predictor
    assert predictor.models.default_model().version == "counting-1"
    assert predictor.horizon_seconds == 60
    assert predictor.simulated_latency_seconds == 1.0


def test_offload_runs_the_model_alone_and_the_caller_stamps_logs_and_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The API's offload is a real thread beside gevent's loop: nothing there may take
    # the process's locks (logging, metrics, the clock).
    model, threads = CountingModel(), {}
    predict = model.predict

    def recorded(*args: object, **kwargs: object) -> float:
        threads["model"] = threading.get_ident()
        return predict(*args, **kwargs)  # type: ignore[arg-type]

    model.predict = recorded  # type: ignore[method-assign]

    def on_a_thread(call: Callable[[], object]) -> object:
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(call).result(5)

    with caplog.at_level("INFO", logger="predictions"):
        prediction = _predictor(model).compute("ETH-EUR", None, on_a_thread)
    assert prediction.predicted_price == model.price
    assert threads["model"] != threading.get_ident()
    (record,) = [r for r in caplog.records if "computed prediction" in r.getMessage()]
    assert record.thread == threading.get_ident()


def test_each_pair_is_fresh_for_its_own_ttl() -> None:
    clock = ManualClock(now=1_000.0)
    own = {"BTC-EUR": 90.0}
    predictor = _predictor(CountingModel(), clock=clock, ttl_of=lambda pair: own.get(pair, 60.0))
    assert predictor.compute("BTC-EUR").fresh_until == 1_090.0
    assert predictor.compute("ETH-EUR").fresh_until == 1_060.0
    # Without one, every pair has the predictor's TTL.
    assert _predictor(CountingModel(), clock=clock).compute("BTC-EUR").fresh_until == 1_060.0
