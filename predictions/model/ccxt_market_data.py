"""Live market data: recent 1-minute candles from an exchange, through ccxt.

``MARKET_DATA=ccxt:kraken`` makes every prediction read the closes of the pair's last
``window_minutes`` one-minute candles (on Kraken the last one is the minute in
progress). Each process has one ccxt exchange, created on first use, whose markets it
loads once (and again after an hour, or sooner when a pair turns out to be unknown). A
refresh batch fetches each of its pairs once (``prefetch``); the model's reads then
come from that fetch. Every failure is a MarketDataError that names the exchange, the
pair and the cause, and fails that pair: its previous prediction stays, and the next
refresh tries again. Nothing here retries, and a rate limit (or an exchange that stops
answering) fails the rest of the batch at once rather than press on.

The test seam is ccxt's own: ``exchange_config={"session": session}`` hands ccxt a
``requests.Session`` (tests mount an adapter on it that serves recorded responses).
"""

from __future__ import annotations

import logging
import math
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from predictions.infra.clock import Clock
from predictions.model.market_data import MINUTE, MarketDataError, PriceWindow

try:
    import ccxt
except ImportError as exc:  # the `live` extra is optional
    raise ImportError(
        "MARKET_DATA=ccxt:<exchange> needs ccxt, which is not installed: "
        "pip install 'prediction-cache[live]'"
    ) from exc

log = logging.getLogger(__name__)

# How long a fetch may be read again: long enough for a refresh batch's reads after its
# prefetch (and for an API process's second miss of a pair right after its first),
# short enough that no read is more than seconds behind the exchange. Each prefetch
# (each refresh) fetches anew, whatever the cache holds.
DEFAULT_MAX_AGE_SECONDS = 10.0
# Markets change rarely (new listings): reload them hourly, or after five minutes when
# a pair is missing from them or the exchange says a symbol is unknown.
DEFAULT_MARKETS_MAX_AGE_SECONDS = 3600.0
MARKETS_RECHECK_SECONDS = 300.0
# Exchange error texts can be whole HTML pages: keep messages and logs readable.
MAX_CAUSE_CHARS = 300


class CcxtMarketData:
    """Recent 1-minute closes of each pair from one exchange, through ccxt's sync API.

    ``exchange_config`` is passed to the ccxt exchange's constructor (ccxt's options:
    ``session``, ``proxies``, ``rateLimit``...), except ``timeout`` and
    ``enableRateLimit``, which this class sets. ``clock``'s monotonic time dates
    the cache. Thread-safe: requests are made one at a time, as the rate limit wants.
    """

    def __init__(
        self,
        exchange_id: str,
        timeout_seconds: float,
        clock: Clock,
        window_minutes: int = 60,
        max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
        markets_max_age_seconds: float = DEFAULT_MARKETS_MAX_AGE_SECONDS,
        exchange_config: Mapping[str, Any] | None = None,
    ) -> None:
        exchange_class = getattr(ccxt, exchange_id, None) if exchange_id in ccxt.exchanges else None
        if exchange_class is None:
            raise ValueError(
                f"MARKET_DATA: ccxt has no exchange {exchange_id!r} "
                "(see ccxt.exchanges; e.g. ccxt:kraken)"
            )
        # Constructing an exchange makes no request: it only reads its description.
        probe = exchange_class()
        if not probe.has.get("fetchOHLCV") or "1m" not in (probe.timeframes or {}):
            raise ValueError(
                f"MARKET_DATA: ccxt exchange {exchange_id!r} has no 1-minute candles (fetchOHLCV)"
            )
        if not math.isfinite(timeout_seconds) or timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be > 0, got {timeout_seconds!r}")
        if window_minutes < 2:
            raise ValueError(f"window_minutes must be at least 2, got {window_minutes!r}")
        self.exchange_id = exchange_id
        self.name = f"ccxt:{exchange_id}"
        self.timeout_seconds = timeout_seconds
        self.window_minutes = window_minutes
        self.max_age_seconds = max_age_seconds
        self.markets_max_age_seconds = markets_max_age_seconds
        self._exchange_class = exchange_class
        self._config = dict(exchange_config or {})
        self._clock = clock
        self._lock = threading.Lock()
        self._exchange: Any = None
        self._pid = 0
        self._markets_loaded_at: float | None = None
        self._markets_due_at = 0.0
        # pair -> (when fetched (clock), (times, closes) or the error the fetch ended with)
        self._cache: dict[str, tuple[float, _Candles | MarketDataError]] = {}

    @property
    def exchange(self) -> Any:
        """This process's ccxt exchange, created on first use (no request is made)."""
        with self._lock:
            return self._current_exchange()

    def recent_prices(self, pair: str, now: float) -> PriceWindow:
        """The closes of ``pair``'s 1-minute candles in the window up to ``now``.

        Read from the cache when the pair was fetched less than ``max_age_seconds``
        ago (by ``prefetch`` or an earlier call), else fetched now. Raises
        MarketDataError, naming the exchange, the pair and the cause.
        """
        with self._lock:
            entry = self._fresh(pair)
            if entry is None:
                entry = self._fetch(pair, now)
                self._cache[pair] = (self._clock.monotonic(), entry)
        if isinstance(entry, MarketDataError):
            # A new exception each time: re-raising the cached one would grow its traceback.
            raise MarketDataError(str(entry)) from entry.__cause__
        return self._window(pair, entry, now)

    def prefetch(self, pairs: Iterable[str], now: float) -> None:
        """Fetch every pair's candles for this refresh cycle, one request per pair.

        ccxt's rate limiter spaces the requests. What each fetch found, or the error
        it ended with, is what ``recent_prices`` returns or raises for the pair until
        ``max_age_seconds`` after this prefetch ends: no pair is requested twice.

        A failure fails its pair only, except that a rate limit, or a second timeout
        or network error in a row (the exchange is unreachable), stops the prefetch:
        the remaining pairs fail at once instead of pressing on (or waiting a timeout
        each), and the next refresh tries them all again.
        """
        results: dict[str, _Candles | MarketDataError] = {}
        halted: MarketDataError | None = None
        network_failures = 0
        with self._lock:
            for pair in dict.fromkeys(pairs):
                if halted is not None:
                    results[pair] = self._error(
                        pair, f"not requested in this refresh, after: {halted}"
                    )
                    continue
                results[pair] = result = self._fetch(pair, now)
                error = result if isinstance(result, MarketDataError) else None
                cause = error.__cause__ if error is not None else None
                if isinstance(cause, ccxt.RateLimitExceeded | ccxt.DDoSProtection):
                    halted = error
                elif isinstance(cause, ccxt.NetworkError):
                    network_failures += 1
                    if network_failures >= 2:
                        halted = error
                else:
                    network_failures = 0
            # Stamped when the whole batch is in: a long prefetch (many pairs spaced by
            # the rate limit) must not age out its own first pairs before they are read.
            fetched_at = self._clock.monotonic()
            for pair, result in results.items():
                self._cache[pair] = (fetched_at, result)

    def _fresh(self, pair: str) -> _Candles | MarketDataError | None:
        cached = self._cache.get(pair)
        if cached is None or self._clock.monotonic() - cached[0] >= self.max_age_seconds:
            return None
        return cached[1]

    def _current_exchange(self) -> Any:
        # One exchange per process: one created before a fork is not shared with the
        # child (its connections and rate-limit clock belong to the parent).
        if self._exchange is None or self._pid != os.getpid():
            config = {
                **self._config,
                "enableRateLimit": True,
                "timeout": int(self.timeout_seconds * 1000),  # ccxt counts milliseconds
            }
            self._exchange = self._exchange_class(config)
            self._pid = os.getpid()
            self._markets_loaded_at = None
            self._cache.clear()
        return self._exchange

    def _fetch(self, pair: str, now: float) -> _Candles | MarketDataError:
        """One pair's candles from the exchange, or the error that says why not."""
        base, dash, quote = pair.partition("-")
        if not (base and dash and quote):
            return self._error(pair, "not a pair of the form BASE-QUOTE")
        symbol = f"{base}/{quote}"
        try:
            markets = self._markets()
        except MarketDataError as exc:
            return self._error(pair, str(exc), exc.__cause__)
        if symbol not in markets:
            self._recheck_markets()
            return self._error(
                pair,
                f"unknown symbol {symbol}: not among the exchange's {len(markets)} markets",
            )
        # A minute more than the window, so that the window is full whatever second
        # of the minute ``now`` is.
        since_ms = int((now - (self.window_minutes + 1) * MINUTE) * 1000)
        try:
            rows = self._current_exchange().fetch_ohlcv(symbol, "1m", since=since_ms)
        except ccxt.BadSymbol as exc:
            self._recheck_markets()
            return self._error(pair, f"unknown symbol {symbol}: {_cause(exc)}", exc)
        except Exception as exc:  # ccxt's errors, or ccxt choking on a malformed answer
            return self._error(pair, _describe(exc, self.timeout_seconds), exc)
        try:
            return _candles(rows)
        except (TypeError, ValueError, IndexError) as exc:
            return self._error(pair, f"malformed candles for {symbol}: {_cause(exc)}", exc)

    def _markets(self) -> Mapping[str, Any]:
        """The exchange's markets, loaded once and reloaded when due."""
        exchange = self._current_exchange()
        now = self._clock.monotonic()
        if self._markets_loaded_at is not None and now < self._markets_due_at:
            return exchange.markets  # type: ignore[no-any-return]
        reload = self._markets_loaded_at is not None
        try:
            exchange.load_markets(reload=reload)
        except Exception as exc:
            if not reload:
                raise MarketDataError(
                    "could not load the exchange's markets: " + _describe(exc, self.timeout_seconds)
                ) from exc
            # Keep the markets we have; they are most likely still right.
            log.warning(
                "%s: reloading markets failed, keeping the old ones error=%r", self.name, exc
            )
            self._markets_due_at = now + MARKETS_RECHECK_SECONDS
            return exchange.markets  # type: ignore[no-any-return]
        self._markets_loaded_at = now
        self._markets_due_at = now + self.markets_max_age_seconds
        return exchange.markets  # type: ignore[no-any-return]

    def _recheck_markets(self) -> None:
        """A symbol was unknown: reload the markets soon (a new listing?), not at once."""
        if self._markets_loaded_at is not None:
            self._markets_due_at = min(
                self._markets_due_at, self._markets_loaded_at + MARKETS_RECHECK_SECONDS
            )

    def _window(self, pair: str, candles: _Candles, now: float) -> PriceWindow:
        times, closes = candles
        start = now - self.window_minutes * MINUTE
        keep = (times > start) & (times <= now)
        count = int(keep.sum())
        if count < 2:
            raise self._error(
                pair,
                f"too few candles: {count} in the {self.window_minutes} minutes up to "
                f"{now:.0f} (got {len(times)}, need at least 2)",
            )
        return PriceWindow(times=times[keep], prices=closes[keep])

    def _error(
        self, pair: str, message: str, cause: BaseException | None = None
    ) -> MarketDataError:
        """The pair's failure, naming the exchange and the pair; chained to its cause."""
        error = MarketDataError(f"{self.name} {pair}: {message}")
        error.__cause__ = cause
        return error


_Candles = tuple[np.ndarray, np.ndarray]


def _candles(rows: Any) -> _Candles:
    """(open times in s, closes), oldest first, from ccxt's [[ms, o, h, l, c, v], ...]."""
    table = np.array([(row[0], row[4]) for row in rows], dtype=np.float64).reshape(-1, 2)
    table = table[np.argsort(table[:, 0], kind="stable")]
    times, closes = table[:, 0] / 1000.0, table[:, 1]
    if not (np.isfinite(table).all() and (closes > 0).all() and (np.diff(times) > 0).all()):
        raise ValueError("a candle has no time, a repeated time or no positive close")
    return times, closes


def _describe(exc: BaseException, timeout_seconds: float) -> str:
    """What kind of failure a ccxt exception is, in words, then the exception."""
    kinds: list[tuple[type[BaseException], str]] = [
        (ccxt.RequestTimeout, f"timed out (timeout {timeout_seconds:g} s)"),
        (ccxt.RateLimitExceeded, "rate limited (not retried; the next refresh tries again)"),
        (ccxt.DDoSProtection, "rate limited (not retried; the next refresh tries again)"),
        (ccxt.ExchangeNotAvailable, "exchange unavailable"),
        (ccxt.NetworkError, "network error"),
        (ccxt.BadSymbol, "unknown symbol"),
        (ccxt.ExchangeError, "exchange error"),
        (ccxt.BaseError, "error"),
    ]
    kind = next((text for cls, text in kinds if isinstance(exc, cls)), "unexpected error")
    return f"{kind}: {_cause(exc)}"


def _cause(exc: BaseException) -> str:
    # One line, whatever the exchange sent (a JSON body, an HTML page).
    text = " ".join(f"{type(exc).__name__}: {exc}".split())
    return text if len(text) <= MAX_CAUSE_CHARS else text[: MAX_CAUSE_CHARS - 3] + "..."
