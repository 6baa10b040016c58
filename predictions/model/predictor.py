"""Predictor.compute: the one function through which every prediction is made."""

from __future__ import annotations

import functools
import logging
import numbers
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

from predictions.infra import metrics
from predictions.infra.clock import Clock
from predictions.model.contract import LoadedModel, Model
from predictions.model.market_data import MarketData
from predictions.model.prediction import Prediction
from predictions.model.versions import ModelCatalog

log = logging.getLogger(__name__)


T = TypeVar("T")
# Runs a blocking call (the model) and returns its result: in the API, on a real thread
# so that the event loop keeps serving; by default, right here.
Offload = Callable[[Callable[[], T]], T]


def run_here(call: Callable[[], T]) -> T:
    return call()


class PredictionFailed(RuntimeError):
    """The model or its data could not produce a servable prediction for a pair."""


class Predictor:
    """Models fed by a market-data source, stamping each answer with its expiry."""

    def __init__(
        self,
        models: ModelCatalog | Model | LoadedModel,
        market_data: MarketData,
        horizon_seconds: int,
        ttl_seconds: float,
        *,
        clock: Clock,
        simulated_latency_seconds: float = 0.0,
        sleep: Callable[[float], None] = time.sleep,
        ttl_of: Callable[[str], float] | None = None,
    ) -> None:
        # The catalog owns the models; a model handed over in code (tests) becomes the
        # default of a catalog of its own.
        if isinstance(models, ModelCatalog):
            self.models = models
        else:
            self.models = ModelCatalog(
                models if isinstance(models, LoadedModel) else LoadedModel(models)
            )
        self.market_data = market_data
        self.horizon_seconds = horizon_seconds
        self.ttl_seconds = ttl_seconds
        # A pair's own TTL (the pair registry's), else ttl_seconds for every pair.
        self.ttl_of = ttl_of or (lambda _pair: ttl_seconds)
        self.simulated_latency_seconds = simulated_latency_seconds
        self.clock = clock
        self.sleep = sleep

    def compute(
        self, pair: str, model: LoadedModel | None = None, offload: Offload[object] = run_here
    ) -> Prediction:
        """Run ``model`` (by default, the catalog's default) for ``pair``; raise
        PredictionFailed rather than return junk.

        ``offload`` runs the model's own work (market data and the model) and nothing
        else: the API runs it on a real thread, where code that takes the process's
        locks (logging, metrics, the clock) could stall gevent's loop, so the caller's
        thread reads the clock, stamps the answer, logs and counts.
        """
        model = model or self.models.default_model()
        started = time.perf_counter()
        if self.simulated_latency_seconds:
            self.sleep(self.simulated_latency_seconds)
        try:
            now = self.clock.now()
            price = offload(functools.partial(self._price, pair, model, now))
            prediction = self._stamp(pair, price, time.perf_counter() - started, model)
        # A user's model may raise anything; it must fail this pair only, loudly.
        except Exception as exc:
            raise self._failed(pair, exc) from exc
        self._computed(prediction)
        return prediction

    def _price(self, pair: str, model: LoadedModel, now: float) -> float:
        prices = self.market_data.recent_prices(pair, now)
        return model.predict(pair, prices, self.horizon_seconds)

    def compute_many(
        self, pairs: Sequence[str], model: LoadedModel | None = None
    ) -> tuple[list[Prediction], dict[str, str]]:
        """Every pair's prediction, or why it failed: (predictions, {pair: reason}).

        Market data that can fetch many pairs at once (``prefetch``) does so first, once
        for the whole batch; a model with ``predict_many`` gets one call for the batch.
        """
        prefetch = getattr(self.market_data, "prefetch", None)
        if prefetch is not None:
            try:
                prefetch(pairs, self.clock.now())
            except Exception as exc:  # each pair's read below says what it lacks
                log.warning("market data prefetch failed error=%r", exc)
        model = model or self.models.default_model()
        if not model.batches:
            predictions, failures = [], {}
            for pair in pairs:
                try:
                    predictions.append(self.compute(pair, model))
                except PredictionFailed as exc:
                    failures[pair] = str(exc)
            return predictions, failures
        return self._compute_batch(pairs, model)

    def _compute_batch(
        self, pairs: Sequence[str], model: LoadedModel
    ) -> tuple[list[Prediction], dict[str, str]]:
        started = time.perf_counter()
        if self.simulated_latency_seconds:
            self.sleep(self.simulated_latency_seconds * len(pairs))
        failures: dict[str, str] = {}
        windows = {}
        now = self.clock.now()
        for pair in pairs:
            try:
                windows[pair] = self.market_data.recent_prices(pair, now)
            except Exception as exc:
                failures[pair] = str(self._failed(pair, exc))
        try:
            prices = model.predict_many(windows, self.horizon_seconds) if windows else {}
        except Exception as exc:
            for pair in windows:
                failures[pair] = str(self._failed(pair, exc))
            return [], failures
        # The time one pair cost: what an early revalidation of one pair will take.
        per_pair = (time.perf_counter() - started) / max(1, len(pairs))
        predictions = []
        for pair in windows:
            try:
                if pair not in prices:
                    raise KeyError(f"predict_many returned no price for {pair}")
                prediction = self._stamp(pair, prices[pair], per_pair, model)
            except Exception as exc:
                failures[pair] = str(self._failed(pair, exc))
                continue
            self._computed(prediction)
            predictions.append(prediction)
        return predictions, failures

    def _stamp(self, pair: str, price: object, seconds: float, model: LoadedModel) -> Prediction:
        """The prediction record for a price; InvalidPrediction if it is not a price."""
        computed_at = round(self.clock.now(), 3)
        if isinstance(price, numbers.Real) and not isinstance(price, bool):
            # numpy.float64 / float32 (what np.mean or prices[-1] of an array give):
            # a plain float, or the JSON encoder would refuse it at write time.
            price = float(price)
        return Prediction(
            pair=pair,
            predicted_price=price,  # type: ignore[arg-type]  # validated by Prediction
            horizon_seconds=self.horizon_seconds,
            computed_at=computed_at,
            fresh_until=round(computed_at + self.ttl_of(pair), 3),
            model_version=model.version,
            data_source=self.market_data.name,
            compute_seconds=round(seconds, 6),
        )

    def _failed(self, pair: str, exc: BaseException) -> PredictionFailed:
        metrics.COMPUTATIONS.labels("failed").inc()
        log.error("prediction failed pair=%s error=%r", pair, exc, extra={"pair": pair})
        return PredictionFailed(f"{pair}: {exc}")

    def _computed(self, prediction: Prediction) -> None:
        metrics.COMPUTATIONS.labels("ok").inc()
        metrics.COMPUTE_SECONDS.observe(prediction.compute_seconds)
        log.info(
            "computed prediction pair=%s price=%.6g seconds=%.3f model=%s",
            prediction.pair,
            prediction.predicted_price,
            prediction.compute_seconds,
            prediction.model_version,
            extra={
                "pair": prediction.pair,
                "compute_seconds": prediction.compute_seconds,
                "model_version": prediction.model_version,
            },
        )
