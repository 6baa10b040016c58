"""A model to copy and fill in: the whole contract, and it works as it is.

Copy this file beside the project (or into any importable package), rename the class,
replace the marked parts, and point the service at it::

    MODEL=mypackage.my_model:MyModel

As it stands it is the naive forecast: the price in ``horizon_seconds`` is the last
price seen. That is a useful baseline to beat, and a model that runs anywhere.

The contract (predictions/model/contract.py states it; the service checks it):

- ``version``: a non-empty string. Every prediction carries it (``model_version``) and
  so do HTTP validators and rollouts, so change it whenever the answers could change
  (new weights, new features, a fix): same version, same answers.
- ``predict(pair, prices)`` returns the price of ``pair`` ``horizon_seconds`` after
  the last price in ``prices``. ``horizon_seconds`` is optional: declare it (as below)
  and the service passes PREDICTION_HORIZON_SECONDS as a keyword.
- ``predict_many(windows)`` is optional: a mapping of pair to prices in, a mapping of
  pair to price out, for a whole refresh batch at once. Offer it only when a batch is
  cheaper than a loop (one vectorised call, one GPU batch); without it the service
  calls ``predict`` per pair.
- A class is instantiated once per process, with no arguments: in every gunicorn worker
  and every Celery pool process. Load weights, files and clients in ``__init__``,
  never per call and never at import: the Celery worker imports this module at start
  only to check MODEL, and must not pay for the load in its main process.
- Several threads may call ``predict`` at once (gunicorn runs threads): keep it free of
  shared mutable state, or take a lock.
- Fail by raising. An exception, NaN, infinity or a price <= 0 fails that pair: nothing
  is cached, the API answers 503, the worker keeps the previous prediction. Never hide
  a failure behind a made-up price. In ``predict_many``, raising fails the whole batch;
  to fail one pair only, leave it out of the result.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from predictions.model import PriceWindow

log = logging.getLogger(__name__)


class TemplateModel:
    """The naive forecast: the last price. Replace the marked parts with your model."""

    # FILL IN: your model's name and a version you bump with every retraining.
    version = "naive-last-price-1"

    def __init__(self) -> None:
        # FILL IN: load heavy things here, once per process, for instance
        #     self.estimator = joblib.load(path)  # only files you trust: it runs code
        # and raise if they are missing or invalid: the process then refuses to serve
        # with your message instead of failing every prediction later.
        pass

    def predict(self, pair: str, prices: PriceWindow, horizon_seconds: int = 300) -> float:
        """The price of ``pair`` ``horizon_seconds`` after the last price in ``prices``."""
        # prices.times (Unix seconds) and prices.prices are numpy arrays, oldest first,
        # one a minute; how many depends on the market-data source (60 by default).
        if len(prices.prices) == 0:
            raise ValueError(f"{pair}: no prices")
        # FILL IN: your prediction. Return a plain float in the pair's quote currency.
        predicted = float(prices.prices[-1])
        if not math.isfinite(predicted) or predicted <= 0:
            raise ValueError(f"{pair}: not a price: {predicted!r}")
        return predicted

    def predict_many(
        self, windows: Mapping[str, PriceWindow], horizon_seconds: int = 300
    ) -> dict[str, float]:
        """Every pair's price at once; delete this method if you have no faster way."""
        # FILL IN: one batched call for all windows (examples/sklearn_trend/model.py
        # makes one estimator.predict call for the batch). A loop gains nothing over
        # leaving predict_many out; it is here to show the shape, and how one bad pair
        # fails alone: it is left out of the result (and says why in the log).
        predicted = {}
        for pair, window in windows.items():
            try:
                predicted[pair] = self.predict(pair, window, horizon_seconds)
            except ValueError as exc:
                log.warning("no prediction pair=%s error=%s", pair, exc)
        return predicted
