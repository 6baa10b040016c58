"""Predictor.compute: the one function through which every prediction is made."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from predictions import metrics
from predictions.market_data import MarketData, build_market_data
from predictions.model import Model, load_model
from predictions.prediction import Prediction
from predictions.settings import Settings

log = logging.getLogger(__name__)


class PredictionFailed(RuntimeError):
    """The model or its data could not produce a servable prediction for a pair."""


class Predictor:
    """A model fed by a market-data source, stamping each answer with its expiry."""

    def __init__(
        self,
        model: Model,
        market_data: MarketData,
        horizon_seconds: int,
        ttl_seconds: float,
        simulated_latency_seconds: float = 0.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.model = model
        self.market_data = market_data
        self.horizon_seconds = horizon_seconds
        self.ttl_seconds = ttl_seconds
        self.simulated_latency_seconds = simulated_latency_seconds
        self.clock = clock
        self.sleep = sleep

    @classmethod
    def from_settings(cls, settings: Settings) -> Predictor:
        """Load the configured model and market data (once per process)."""
        return cls(
            model=load_model(settings.model),
            market_data=build_market_data(settings.market_data),
            horizon_seconds=settings.prediction_horizon_seconds,
            ttl_seconds=settings.prediction_ttl_seconds,
            simulated_latency_seconds=settings.simulated_model_latency_seconds,
        )

    def compute(self, pair: str) -> Prediction:
        """Run the model for ``pair``; raise PredictionFailed rather than return junk."""
        started = time.perf_counter()
        if self.simulated_latency_seconds:
            self.sleep(self.simulated_latency_seconds)
        try:
            prices = self.market_data.recent_prices(pair, self.clock())
            price = self.model.predict(pair, prices, self.horizon_seconds)
            computed_at = round(self.clock(), 3)
            prediction = Prediction(
                pair=pair,
                predicted_price=price,
                horizon_seconds=self.horizon_seconds,
                computed_at=computed_at,
                fresh_until=round(computed_at + self.ttl_seconds, 3),
                model_version=self.model.version,
                data_source=self.market_data.name,
                compute_seconds=round(time.perf_counter() - started, 6),
            )
        # A user's model may raise anything; it must fail this pair only, loudly.
        except Exception as exc:
            metrics.COMPUTATIONS.labels("failed").inc()
            log.error("prediction failed pair=%s error=%r", pair, exc, extra={"pair": pair})
            raise PredictionFailed(f"{pair}: {exc}") from exc
        metrics.COMPUTATIONS.labels("ok").inc()
        metrics.COMPUTE_SECONDS.observe(prediction.compute_seconds)
        log.info(
            "computed prediction pair=%s price=%.6g seconds=%.3f model=%s",
            pair,
            prediction.predicted_price,
            prediction.compute_seconds,
            prediction.model_version,
            extra={
                "pair": pair,
                "compute_seconds": prediction.compute_seconds,
                "model_version": prediction.model_version,
            },
        )
        return prediction
