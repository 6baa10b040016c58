"""Where the model's input prices come from.

A market-data source returns a pair's recent 1-minute prices. The default source is an
offline, deterministic synthetic feed, so the project runs anywhere with no network;
live exchange data plugs in behind the same small interface.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Sequence
from typing import Any, Protocol, overload

import numpy as np

from predictions.infra.clock import Clock

MINUTE = 60

# Rough USD prices, so that synthetic pairs sit at plausible levels (ETH-EUR near
# 3,000, BTC-USD near 65,000). An asset not listed gets a stable made-up price.
USD_PRICES = {
    "BTC": 65_000.0,
    "ETH": 3_200.0,
    "SOL": 150.0,
    "BNB": 580.0,
    "XRP": 0.6,
    "ADA": 0.45,
    "DOGE": 0.15,
    "DOT": 6.5,
    "LTC": 80.0,
    "LINK": 14.0,
    "USD": 1.0,
    "USDT": 1.0,
    "USDC": 1.0,
    "EUR": 1.08,
    "GBP": 1.27,
    "CHF": 1.13,
    "JPY": 0.0067,
}


@dataclasses.dataclass(frozen=True)
class PriceWindow(Sequence[float]):
    """Recent closing prices of one pair, oldest first, with their Unix times (s).

    It is the sequence of prices itself, so a model written for a list or a numpy
    array works unchanged: ``len(prices)``, ``prices[-1]``, ``prices[-10:]`` (a numpy
    array), ``for price in prices``, ``numpy.asarray(prices)``. ``prices.prices`` and
    ``prices.times`` are the two numpy arrays, for models that need the times too.
    """

    times: np.ndarray
    prices: np.ndarray

    def __len__(self) -> int:
        return len(self.prices)

    # A slice is a numpy array, as numpy-style code expects (prices[-5:].mean()),
    # not the Sequence the ABC names: hence the override.
    @overload  # type: ignore[override]
    def __getitem__(self, index: int) -> float: ...

    @overload
    def __getitem__(self, index: slice) -> np.ndarray: ...

    def __getitem__(self, index: int | slice) -> float | np.ndarray:
        if isinstance(index, slice):
            return self.prices[index]
        return float(self.prices[index])

    def __iter__(self) -> Iterator[float]:
        return iter(self.prices.tolist())

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        # numpy.asarray(prices), numpy.log(prices), np.mean(prices)...: the prices.
        if copy:
            return np.array(self.prices, dtype=dtype, copy=True)
        return np.asarray(self.prices, dtype=dtype)


class MarketDataError(RuntimeError):
    """A source could not give a pair's prices (timeout, rate limit, unknown symbol...)."""


class MarketData(Protocol):
    """A source of recent prices; ``name`` is reported in every prediction.

    A source may also have ``prefetch(pairs, now)``: Predictor.compute_many calls it
    once per refresh batch, before reading each pair, so that a live source fetches
    every pair of the batch in one go (once per refresh cycle), not once per request.
    """

    name: str

    def recent_prices(self, pair: str, now: float) -> PriceWindow:
        """Return the prices of ``pair`` for the minutes up to ``now``; raise on failure."""
        ...


class SyntheticMarketData:
    """A seeded random walk per pair, anchored to a plausible price level.

    The log price at minute m is the anchor plus the sum of the last ``memory_minutes``
    per-minute shocks, so it wanders like a random walk over hours but never drifts
    away for good. Shock k of a pair comes from a counter-based generator (Philox)
    keyed by the pair, so any process computes the same price for the same minute.
    """

    name = "synthetic"

    def __init__(
        self,
        window_minutes: int = 60,
        # Four hours of memory: the walk's spread is about 1.2 %, a plausible four-hour
        # move, and each window costs 300 draws rather than a day's 1,500.
        memory_minutes: int = 240,
        volatility_per_minute: float = 0.0008,  # about 3 % a day, like BTC
    ) -> None:
        self.window_minutes = window_minutes
        self.memory_minutes = memory_minutes
        self.volatility = volatility_per_minute

    def recent_prices(self, pair: str, now: float) -> PriceWindow:
        last = int(now // MINUTE)
        first = last - self.window_minutes + 1
        shocks = _shocks(
            _key(pair), first - self.memory_minutes, self.window_minutes + self.memory_minutes
        )
        total = np.cumsum(shocks)
        # walk[i] = sum of the memory_minutes shocks ending at minute first + i
        walk = total[self.memory_minutes :] - total[: self.window_minutes]
        log_prices = np.log(anchor_price(pair)) + self.volatility * walk
        minutes = np.arange(first, last + 1, dtype=np.float64)
        return PriceWindow(times=minutes * MINUTE, prices=np.exp(log_prices))


def anchor_price(pair: str) -> float:
    """The level a synthetic pair's price wanders around."""
    base, quote = pair.split("-")
    return _usd_price(base) / _usd_price(quote)


def _usd_price(asset: str) -> float:
    if asset in USD_PRICES:
        return USD_PRICES[asset]
    # Between 0.01 and 1,000 USD, the same for the asset every time.
    fraction = int.from_bytes(hashlib.blake2b(asset.encode(), digest_size=4).digest()) / 2**32
    return float(10 ** (-2 + 5 * fraction))


def _key(pair: str) -> int:
    return int.from_bytes(hashlib.blake2b(pair.encode(), digest_size=8).digest())


def _shocks(key: int, first_minute: int, count: int) -> np.ndarray:
    """Standard normal shocks for minutes first_minute .. first_minute + count - 1."""
    generator = np.random.Philox(key=key)
    # Philox is counter-based: one counter step per minute makes shock k depend on
    # (key, k) alone, whatever window asked for it.
    generator.advance(first_minute % 2**128)
    raw = generator.random_raw(4 * count).reshape(count, 4)
    # Box-Muller on the first two 64-bit words of each counter block.
    u1 = (raw[:, 0] >> np.uint64(11)).astype(np.float64) * 2.0**-53
    u2 = (raw[:, 1] >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)


def build_market_data(name: str, timeout_seconds: float, clock: Clock) -> MarketData:
    """The source named by MARKET_DATA, its requests bounded by MARKET_DATA_TIMEOUT_SECONDS."""
    if name == "synthetic":
        return SyntheticMarketData()
    kind, _, exchange = name.partition(":")
    if kind == "ccxt" and exchange:
        # Imported only when asked for: ccxt is an optional extra (`live`).
        from predictions.model.ccxt_market_data import CcxtMarketData

        return CcxtMarketData(exchange, timeout_seconds=timeout_seconds, clock=clock)
    raise ValueError(f"MARKET_DATA: unknown source {name!r}")
