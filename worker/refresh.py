"""The refresh logic, free of Celery so that tests can call it directly."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence

from predictions.keys import InvalidPair, canonical_pair
from predictions.prediction import Prediction
from predictions.predictor import PredictionFailed, Predictor
from predictions.redis_client import make_redis
from predictions.settings import Settings
from predictions.store import PredictionStore

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class RefreshResources:
    """What a refresh needs: the configured pairs, the predictor and the store."""

    pairs: frozenset[str]
    predictor: Predictor
    store: PredictionStore

    @classmethod
    def from_settings(cls, settings: Settings) -> RefreshResources:
        return cls(
            pairs=frozenset(settings.pairs),
            predictor=Predictor.from_settings(settings),
            store=PredictionStore(make_redis(settings, client_name="prediction-cache-worker")),
        )


def batches(pairs: Sequence[str], batch_size: int, min_batches: int) -> list[tuple[str, ...]]:
    """Split pairs into batches of at most batch_size, and at least min_batches of them
    (when there are that many pairs), so that every pool process gets work."""
    if not pairs:
        return []
    count = min(len(pairs), max(math.ceil(len(pairs) / batch_size), min_batches))
    size = math.ceil(len(pairs) / count)
    return [tuple(pairs[i : i + size]) for i in range(0, len(pairs), size)]


def refresh_pairs(pairs: Sequence[str], resources: RefreshResources) -> int:
    """Compute each pair and store them all in one round trip.

    A pair whose model fails is logged and skipped: its previous prediction stays
    until it expires, and the other pairs are still refreshed. A task message may
    carry anything, so pairs that are not configured are ignored.
    """
    started = time.perf_counter()
    computed: list[Prediction] = []
    for text in pairs:
        try:
            pair = canonical_pair(str(text))
        except InvalidPair:
            pair = ""
        if pair not in resources.pairs:
            log.warning("ignoring a refresh of an unconfigured pair %r", str(text)[:40])
            continue
        try:
            computed.append(resources.predictor.compute(pair))
        except PredictionFailed:
            continue  # already logged with the pair
    written = resources.store.write_many(computed, time.time())
    log.info(
        "refreshed pairs=%d written=%d failed=%d seconds=%.3f",
        len(pairs),
        written,
        len(pairs) - len(computed),
        time.perf_counter() - started,
    )
    return written
