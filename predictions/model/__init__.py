"""Making a prediction: the model contract (any object with a ``version`` and a
``predict``), the default model, the predictor that runs a model on market data and
stamps its answer, model versions in Redis and each process's catalog of built models,
and the prediction record that the store keeps and the API serves.

``MODEL=predictions.model:LogLinearTrendModel`` names the default model through this
package.
"""

from predictions.model.contract import LoadedModel, Model, ModelLoadError, import_model, load_model
from predictions.model.market_data import (
    MarketData,
    MarketDataError,
    PriceWindow,
    SyntheticMarketData,
    build_market_data,
)
from predictions.model.prediction import PREDICTION_FIELDS, InvalidPrediction, Prediction
from predictions.model.predictor import Offload, PredictionFailed, Predictor, run_here
from predictions.model.trend import LogLinearTrendModel
from predictions.model.versions import ModelCatalog, read_active, register

__all__ = [
    "PREDICTION_FIELDS",
    "InvalidPrediction",
    "LoadedModel",
    "LogLinearTrendModel",
    "MarketData",
    "MarketDataError",
    "Model",
    "ModelCatalog",
    "ModelLoadError",
    "Offload",
    "Prediction",
    "PredictionFailed",
    "Predictor",
    "PriceWindow",
    "SyntheticMarketData",
    "build_market_data",
    "import_model",
    "load_model",
    "read_active",
    "register",
    "run_here",
]
