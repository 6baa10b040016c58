"""Test doubles shared by unit and integration tests: real objects, no mocks."""

from __future__ import annotations

import re
import threading
import time

from predictions.model.market_data import PriceWindow
from predictions.model.prediction import Prediction


def make_prediction(**changes: object) -> Prediction:
    """A valid prediction of ETH-EUR, computed at 1,000 s and fresh for 60 s."""
    fields: dict[str, object] = {
        "pair": "ETH-EUR",
        "predicted_price": 2890.5,
        "horizon_seconds": 300,
        "computed_at": 1_000.25,
        "fresh_until": 1_060.25,
        "model_version": "m-1",
        "data_source": "synthetic",
        "compute_seconds": 1.0,
    }
    return Prediction(**(fields | changes))  # type: ignore[arg-type]


# The doubles take the horizon, as LoadedModel passes it to a predict that names it; its
# default lets them stand where the two-argument Model protocol is expected, unwrapped.


class CountingModel:
    """The default model's interface with a fixed answer, counting its calls."""

    version = "counting-1"

    def __init__(self, price: float = 123.0) -> None:
        self.price = price
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def predict(self, pair: str, prices: PriceWindow, horizon_seconds: int = 0) -> float:
        with self._lock:
            self.calls.append(pair)
        return self.price


class FailingModel:
    """A model that raises, as a broken user model would."""

    version = "failing-1"

    def predict(self, pair: str, prices: PriceWindow, horizon_seconds: int = 0) -> float:
        raise RuntimeError("model exploded")


class NanModel:
    """A model whose output must never reach the cache."""

    version = "nan-1"

    def predict(self, pair: str, prices: PriceWindow, horizon_seconds: int = 0) -> float:
        return float("nan")


# RFC 9110 (5.6.2, 5.6.4, 8.3.1): token, quoted-string, and a media type's parameters.
_TCHARS = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PARAMETER = re.compile(rf"[ \t]*;[ \t]*({_TCHARS})=({_TCHARS}|{_QUOTED})")


def parse_media_type(value: str) -> tuple[str, dict[str, str]]:
    """A Content-Type value, parsed as strictly as Go's mime.ParseMediaType (which
    Prometheus uses): ``type/subtype`` and its parameters, each name at most once
    (case-insensitively). Raises ValueError on anything else."""
    head = re.match(rf"({_TCHARS})/({_TCHARS})", value)
    if head is None:
        raise ValueError(f"not a media type: {value!r}")
    parameters: dict[str, str] = {}
    position = head.end()
    while position < len(value):
        found = _PARAMETER.match(value, position)
        if found is None:
            raise ValueError(f"bad parameters in {value!r} at {value[position:]!r}")
        name = found[1].lower()
        if name in parameters:
            raise ValueError(f"parameter {name!r} repeated in {value!r}")
        parameters[name] = found[2].strip('"')
        position = found.end()
    return f"{head[1]}/{head[2]}".lower(), parameters


class ManualClock:
    """A Clock (predictions.infra.Clock) that moves only when told to."""

    def __init__(self, now: float = 1_000.0, monotonic: float = 0.0) -> None:
        self.instant = now
        self.seconds = monotonic

    def now(self) -> float:
        return self.instant

    def monotonic(self) -> float:
        return self.seconds

    def advance(self, seconds: float) -> None:
        self.instant += seconds
        self.seconds += seconds


class HostClock:
    """A Clock that reads this host's clock: real time, without a Redis to ask."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
