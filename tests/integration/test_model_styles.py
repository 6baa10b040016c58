"""A model written for a list, for a numpy array or for the contract runs in a real worker."""

from __future__ import annotations

import numpy as np
import pytest

from examples.model_styles import ContractStyleModel, ListStyleModel, NumpyStyleModel
from predictions.infra.keys import prediction_key
from predictions.model.market_data import SyntheticMarketData
from predictions.model.prediction import Prediction
from tests.harness.processes import ProcessFactory, RedisServer, wait_for
from tests.harness.system import TEST_PAIRS

pytestmark = pytest.mark.integration

STYLES = (ListStyleModel, NumpyStyleModel, ContractStyleModel)


def _expected(pair: str, computed_at: float) -> list[float]:
    """Mean of the last five synthetic prices, for the minutes around computed_at."""
    market = SyntheticMarketData()
    return [
        float(market.recent_prices(pair, computed_at + shift).prices[-5:].mean())
        for shift in (-60.0, 0.0)
    ]


@pytest.mark.parametrize("model", STYLES, ids=lambda model: model.__name__)
def test_each_model_style_refreshes_every_pair_in_a_worker(
    model: type, start: ProcessFactory, redis_server: RedisServer
) -> None:
    env = {"MODEL": f"examples.model_styles:{model.__name__}"}
    worker = start("worker", **env)
    start("beat", **env)
    client = redis_server.client()
    pairs = TEST_PAIRS.split(",")
    keys = [prediction_key(pair, model.version) for pair in pairs]  # type: ignore[attr-defined]
    wait_for(lambda: all(client.exists(key) for key in keys), 60, what=f"{model.__name__} stored")
    for pair, key in zip(pairs, keys, strict=True):
        raw = client.get(key)
        assert isinstance(raw, bytes)
        prediction = Prediction.from_json(raw, pair)
        assert prediction.model_version == model.version  # type: ignore[attr-defined]
        assert np.isclose(_expected(pair, prediction.computed_at), prediction.predicted_price).any()
    assert "Traceback" not in worker.output()
