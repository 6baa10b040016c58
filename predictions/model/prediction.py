"""The prediction record: what the worker stores, what the API serves.

The stored JSON is exactly the body the API answers with, so a cache hit needs no
re-encoding. Decoding validates every field: Redis is outside the process, and an entry
that does not look exactly like one we wrote is treated as absent.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

PREDICTION_FIELDS = frozenset(
    {
        "pair",
        "predicted_price",
        "horizon_seconds",
        "computed_at",
        "fresh_until",
        "model_version",
        "data_source",
        "compute_seconds",
    }
)


class InvalidPrediction(ValueError):
    """A prediction (from a model, or read back from Redis) that must not be served."""


@dataclasses.dataclass(frozen=True, slots=True)
class Prediction:
    """One model answer for one pair, fresh from computed_at until fresh_until.

    Past fresh_until it is stale: still stored, and served marked stale, for a grace
    period (the store's), never after.
    """

    pair: str
    predicted_price: float
    horizon_seconds: int
    computed_at: float  # Unix time, millisecond precision
    fresh_until: float  # Unix time, millisecond precision
    model_version: str
    data_source: str
    compute_seconds: float
    # The exact JSON this prediction was read from, so that serving it needs no encoding.
    body: bytes = dataclasses.field(default=b"", compare=False, repr=False)

    def __post_init__(self) -> None:
        price = self.predicted_price
        # bool is an int: refuse it explicitly, it is never a price.
        if isinstance(price, bool) or not isinstance(price, int | float):
            raise InvalidPrediction(f"{self.pair}: price {price!r} is not a number")
        if not math.isfinite(price) or price <= 0:
            raise InvalidPrediction(f"{self.pair}: price {price!r} is not finite and > 0")
        if not self.fresh_until > self.computed_at:
            raise InvalidPrediction(f"{self.pair}: fresh_until is not after computed_at")
        if not math.isfinite(self.compute_seconds) or self.compute_seconds < 0:
            raise InvalidPrediction(f"{self.pair}: bad compute_seconds")

    def is_fresh(self, now: float) -> bool:
        return now < self.fresh_until

    def to_dict(self) -> dict[str, Any]:
        """The public JSON shape: times as ISO 8601 UTC."""
        return {
            "pair": self.pair,
            "predicted_price": self.predicted_price,
            "horizon_seconds": self.horizon_seconds,
            "computed_at": format_time(self.computed_at),
            "fresh_until": format_time(self.fresh_until),
            "model_version": self.model_version,
            "data_source": self.data_source,
            "compute_seconds": self.compute_seconds,
        }

    def to_json(self) -> bytes:
        """Compact JSON; the price was checked finite, so no NaN can be written."""
        return self.body or orjson.dumps(self.to_dict())

    @classmethod
    def from_json(cls, raw: bytes, pair: str) -> Prediction:
        """Decode and validate a stored entry for ``pair``; raise InvalidPrediction."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidPrediction(f"{pair}: not JSON ({exc})") from None
        if not isinstance(data, dict) or data.keys() != PREDICTION_FIELDS:
            raise InvalidPrediction(f"{pair}: not a prediction object")
        if data["pair"] != pair:
            raise InvalidPrediction(f"{pair}: entry is for {data['pair']!r}")
        horizon = data["horizon_seconds"]
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon <= 0:
            raise InvalidPrediction(f"{pair}: bad horizon_seconds")
        for name in ("model_version", "data_source"):
            if not isinstance(data[name], str) or not data[name]:
                raise InvalidPrediction(f"{pair}: bad {name}")
        seconds = data["compute_seconds"]
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise InvalidPrediction(f"{pair}: bad compute_seconds")
        return cls(
            pair=pair,
            predicted_price=data["predicted_price"],
            horizon_seconds=horizon,
            computed_at=parse_time(data["computed_at"], pair),
            fresh_until=parse_time(data["fresh_until"], pair),
            # Shared by every pair: one string each, not one per pair held in memory.
            model_version=sys.intern(data["model_version"]),
            data_source=sys.intern(data["data_source"]),
            compute_seconds=float(seconds),
            body=raw,
        )


def format_time(timestamp: float) -> str:
    """ISO 8601 in UTC with milliseconds and a Z: 2026-11-25T01:02:03.456Z."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(text: object, pair: str) -> float:
    """The inverse of format_time, for entries read back from Redis."""
    if not isinstance(text, str) or not text.endswith("Z"):
        raise InvalidPrediction(f"{pair}: bad timestamp {text!r}")
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise InvalidPrediction(f"{pair}: bad timestamp {text!r}") from None
