"""What every baseline shares with our service: settings, model, log lines.

A baseline reads the same environment variables as our processes (REDIS_URL, PAIRS,
SIMULATED_MODEL_LATENCY_SECONDS, PREDICTION_TTL_SECONDS as its expiry, API_BIND through
gunicorn.conf.py), computes through the same Predictor, and logs the same
"computed prediction pair=" line per model run, which the driver counts.
"""

from __future__ import annotations

import dataclasses

from predictions.infra.logs import configure_logging
from predictions.model.predictor import Predictor
from predictions.settings import Settings


def load_baseline() -> tuple[Settings, Predictor]:
    """Settings from the environment, logging as our API logs, and the model."""
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    return settings, Predictor.from_settings(settings)


def sample_body(settings: Settings) -> bytes:
    """A prediction body exactly as our API serves one (same fields, about the same size)."""
    instant = dataclasses.replace(settings, simulated_model_latency_seconds=0.0)
    return Predictor.from_settings(instant).compute(settings.pairs[0]).to_json()
