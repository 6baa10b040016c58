from __future__ import annotations

import math

import orjson
import pytest

from predictions.model.prediction import InvalidPrediction, Prediction, format_time
from tests.harness.doubles import make_prediction

GOOD = make_prediction(computed_at=1_764_000_000.123, fresh_until=1_764_000_060.123)


def test_round_trip_is_exact() -> None:
    decoded = Prediction.from_json(GOOD.to_json(), "ETH-EUR")
    assert decoded == GOOD
    # Served as read: the same bytes, with no second encoding.
    assert decoded.to_json() is decoded.body


def test_json_is_compact_with_iso_utc_times() -> None:
    body = GOOD.to_json()
    assert b" " not in body
    data = orjson.loads(body)
    assert data["computed_at"] == "2025-11-24T16:00:00.123Z"
    assert data["fresh_until"] == "2025-11-24T16:01:00.123Z"
    assert format_time(0) == "1970-01-01T00:00:00.000Z"


@pytest.mark.parametrize("price", [math.nan, math.inf, -math.inf, 0.0, -5.0, True, "12"])
def test_unservable_prices_are_refused(price: object) -> None:
    with pytest.raises(InvalidPrediction):
        Prediction(**{**_fields(GOOD), "predicted_price": price})  # type: ignore[arg-type]


def _fields(prediction: Prediction) -> dict[str, object]:
    return {name: getattr(prediction, name) for name in Prediction.__slots__}


def _stored(**changes: object) -> bytes:
    return orjson.dumps({**GOOD.to_dict(), **changes})


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'"ETH-EUR"',
        b"{}",
        _stored(pair="BTC-EUR"),
        _stored(predicted_price=None),
        _stored(predicted_price=-1),
        _stored(predicted_price="1.0"),
        _stored(horizon_seconds=0),
        _stored(horizon_seconds=True),
        _stored(computed_at="yesterday"),
        _stored(computed_at=1764000000),
        _stored(fresh_until="2025-11-24T16:01:00.123+01:00"),
        _stored(fresh_until=GOOD.to_dict()["computed_at"]),
        _stored(model_version=""),
        _stored(data_source=7),
        _stored(compute_seconds="fast"),
        _stored(extra="field"),
        b'{"pair":"ETH-EUR","predicted_price":NaN}',
    ],
)
def test_corrupt_entries_are_invalid(raw: bytes) -> None:
    with pytest.raises(InvalidPrediction):
        Prediction.from_json(raw, "ETH-EUR")
