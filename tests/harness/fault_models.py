"""Models that fail for some pairs only, for fault-injection tests of real processes.

Loaded through MODEL like any model (MODEL=tests.harness.fault_models:PairFaultModel); which
pair fails, and how, is read from the FAULTS environment variable when the model is
built, once per process:

    FAULTS=ETH-EUR=raise,BTC-EUR=nan,ETH-USD=inf,BTC-USD=negative

Every other pair gets the default model's answer.
"""

from __future__ import annotations

import os
import time

from predictions.model import LogLinearTrendModel
from predictions.model.market_data import PriceWindow

# What a broken model may return instead of a price: each must fail that pair only.
BAD_PRICES = {"nan": float("nan"), "inf": float("inf"), "negative": -1.0, "zero": 0.0}
FAULTS = frozenset({"raise", *BAD_PRICES})


class PairFaultModel:
    """The default model, except for the pairs named in FAULTS."""

    version = "pair-fault-1"

    def __init__(self) -> None:
        self.faults: dict[str, str] = {}
        for item in os.environ.get("FAULTS", "").split(","):
            if not item.strip():
                continue
            pair, _, fault = item.strip().partition("=")
            if fault not in FAULTS:
                raise ValueError(f"FAULTS: unknown fault {fault!r} for {pair!r}")
            self.faults[pair] = fault
        self.healthy = LogLinearTrendModel()

    def predict(self, pair: str, prices: PriceWindow, horizon_seconds: int) -> float:
        fault = self.faults.get(pair)
        if fault is None:
            return self.healthy.predict(pair, prices, horizon_seconds)
        if fault == "raise":
            raise RuntimeError(f"model exploded on {pair}")
        return BAD_PRICES[fault]


class SwitchedFaultModel:
    """The default model, failing every pair while the file FAULT_FILE exists.

    A test breaks and mends the model of running processes by creating and removing
    that file: a refresh failure injected from outside, as an outage would come.
    """

    version = "switched-fault-1"

    def __init__(self) -> None:
        self.switch = os.environ["FAULT_FILE"]
        self.healthy = LogLinearTrendModel()

    def predict(self, pair: str, prices: PriceWindow, horizon_seconds: int) -> float:
        if os.path.exists(self.switch):
            raise RuntimeError(f"injected model failure on {pair}")
        return self.healthy.predict(pair, prices, horizon_seconds)


class CpuHeavyModel:
    """The default model's answer after 200 ms of pure-Python CPU work (not a sleep):
    the kind of model that would stall an event loop if it ran on it."""

    version = "cpu-heavy-1"
    cpu_seconds = 0.2

    def __init__(self) -> None:
        self.healthy = LogLinearTrendModel()

    def predict(self, pair: str, prices: PriceWindow, horizon_seconds: int) -> float:
        deadline = time.thread_time() + self.cpu_seconds
        spin = 0
        while time.thread_time() < deadline:
            spin += sum(range(200))
        return self.healthy.predict(pair, prices, horizon_seconds)
