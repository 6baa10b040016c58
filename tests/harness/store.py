"""What Redis holds for the pairs, read the way the service stores it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
import redis

from predictions.infra.keys import prediction_key
from tests.harness.system import PAIRS, TEST_VERSION


def stored(client: redis.Redis, pair: str, version: str = TEST_VERSION) -> dict[str, Any] | None:
    """The pair's prediction as Redis holds it now, decoded (the API's body for it), or
    None when absent."""
    raw = client.get(prediction_key(pair, version))
    if raw is None:
        return None
    found: dict[str, Any] = orjson.loads(raw)
    return found


def computed_at(client: redis.Redis, pair: str, version: str = TEST_VERSION) -> str | None:
    """When the stored prediction of the pair was computed, as stored; None if absent."""
    entry = stored(client, pair, version)
    return None if entry is None else str(entry["computed_at"])


def cached(client: redis.Redis, pairs: Iterable[str] = PAIRS, version: str = TEST_VERSION) -> bool:
    """Whether Redis holds a prediction of every pair under the version."""
    return all(client.exists(prediction_key(pair, version)) for pair in pairs)
