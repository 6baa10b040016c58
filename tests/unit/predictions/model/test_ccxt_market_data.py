"""Live market data through ccxt, against Kraken's REST API replayed from fixtures.

ccxt's synchronous exchanges send every request through a ``requests.Session``; the
tests hand ccxt one (``exchange_config={"session": ...}``) with an adapter mounted that
serves tests/fixtures/kraken and refuses any other request. Everything between that
session and our code is ccxt's own: its URLs, its parsing, its error mapping, its rate
limiter. No test touches the network: the real HTTP adapter is disabled too.
"""

from __future__ import annotations

import http
import importlib
import json
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ccxt
import fakeredis
import numpy as np
import pytest
import requests
from requests.adapters import BaseAdapter, HTTPAdapter

from predictions.cache.store import PredictionStore
from predictions.infra import Clock
from predictions.infra.keys import prediction_key
from predictions.model import LogLinearTrendModel
from predictions.model.ccxt_market_data import DEFAULT_MAX_AGE_SECONDS, CcxtMarketData
from predictions.model.market_data import MarketDataError, build_market_data
from predictions.model.predictor import Predictor
from predictions.settings import Settings
from predictions.wiring import wire
from tests.harness.doubles import CountingModel, HostClock, ManualClock
from worker.refresh import refresh_batch

FIXTURES = Path(__file__).resolve().parents[3] / "fixtures" / "kraken"
API = "https://api.kraken.com"
# The fixtures' 60 candles open at T0, T0 + 60, ... T0 + 3540 (2026-01-01T00:00Z on).
T0 = 1_767_225_600
NOW = T0 + 59 * 60 + 30  # half a minute into the last candle's minute
PAIRS = ("ETH-EUR", "BTC-EUR", "ETH-USD", "BTC-USD")
KRAKEN_IDS = {"ETH-EUR": "XETHZEUR", "BTC-EUR": "XXBTZEUR", "ETH-USD": "XETHZUSD",
              "BTC-USD": "XXBTZUSD"}  # fmt: skip
TIMEOUT = 2.5


@dataclass(frozen=True)
class Reply:
    """An HTTP answer: a status and a body (a fixture file's name, or the text itself)."""

    status: int = 200
    fixture: str | None = None
    text: str = ""


class UnexpectedRequest(AssertionError):
    """A request the fixtures do not cover: the code under test went somewhere new."""


class KrakenFixtures(BaseAdapter):
    """Kraken's public REST API, replayed from tests/fixtures/kraken.

    Serves GET /0/public/Assets, /0/public/AssetPairs and /0/public/OHLC?pair=<id>
    (interval 1) from their recorded files, and whatever ``replies`` says for a path,
    or a path and pair: a Reply, or an exception to raise as the network would. It
    records every request, and refuses (and records) anything else. With
    ``shift_to``, candle times move by whole minutes so that the last candle is the
    minute of ``shift_to``: the recording replayed as if it were now.
    """

    def __init__(self, shift_to: float | None = None) -> None:
        super().__init__()
        self.shift_to = shift_to
        self.replies: dict[tuple[str, str | None], Reply | Exception] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.sent_at: list[float] = []
        self.timeouts: set[object] = set()
        self.refused: list[str] = []
        self.on_request: Callable[[], None] = lambda: None

    def session(self) -> requests.Session:
        session = requests.Session()
        session.mount("https://", self)
        session.mount("http://", self)
        return session

    def reply(self, path: str, answer: Reply | Exception, pair: str | None = None) -> None:
        """Answer requests to ``path`` (for one pair, if given: ETH-EUR) with ``answer``."""
        self.replies[(path, KRAKEN_IDS[pair] if pair else None)] = answer

    def candles_asked(self) -> list[str]:
        """The Kraken pair id of each OHLC request, in order."""
        return [query["pair"] for path, query in self.requests if path == "/0/public/OHLC"]

    def count(self, path: str) -> int:
        """How many requests went to ``path``."""
        return sum(1 for sent, _ in self.requests if sent == path)

    def send(self, request: Any, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        url = urllib.parse.urlsplit(request.url)
        query = dict(urllib.parse.parse_qsl(url.query))
        if request.method != "GET" or f"{url.scheme}://{url.netloc}" != API:
            return self._refuse(request)
        self.requests.append((url.path, query))
        self.sent_at.append(time.monotonic())
        self.timeouts.add(kwargs.get("timeout"))
        self.on_request()
        answer = self.replies.get((url.path, query.get("pair")), self.replies.get((url.path, None)))
        if isinstance(answer, Exception):
            raise answer
        if answer is None:
            answer = self._recorded(url.path, query)
            if answer is None:
                return self._refuse(request)
        return self._response(request, answer)

    def close(self) -> None:
        pass

    def _recorded(self, path: str, query: dict[str, str]) -> Reply | None:
        if path in ("/0/public/Assets", "/0/public/AssetPairs") and not query:
            return Reply(fixture=path.rsplit("/", 1)[1] + ".json")
        if path == "/0/public/OHLC" and query.get("interval") == "1":
            name = f"OHLC_{query.get('pair')}.json"
            if (FIXTURES / name).exists():
                return Reply(fixture=name)
        return None

    def _response(self, request: Any, answer: Reply) -> requests.Response:
        text = (FIXTURES / answer.fixture).read_text() if answer.fixture else answer.text
        if self.shift_to is not None and answer.fixture and answer.fixture.startswith("OHLC_"):
            text = _shifted(text, self.shift_to)
        response = requests.Response()
        response.status_code = answer.status
        response.reason = http.HTTPStatus(answer.status).phrase
        response.headers["Content-Type"] = "application/json"
        response._content = text.encode()
        response.url = request.url
        response.request = request
        return response

    def _refuse(self, request: Any) -> requests.Response:
        self.refused.append(f"{request.method} {request.url}")
        raise UnexpectedRequest(f"no fixture for {request.method} {request.url}")


def _shifted(text: str, now: float) -> str:
    body = json.loads(text)
    result = body["result"]
    pair = next(key for key in result if key != "last")
    last_minute = result[pair][-1][0] // 60
    shift = (int(now // 60) - last_minute) * 60
    for row in result[pair]:
        row[0] += shift
    result["last"] += shift
    return json.dumps(body)


def _candles(kraken_id: str) -> list[list[Any]]:
    rows: list[list[Any]] = json.loads((FIXTURES / f"OHLC_{kraken_id}.json").read_text())["result"][
        kraken_id
    ]
    return rows


class FakeClock(ManualClock):
    """Monotonic seconds that move only when a test says so (``clock.seconds``)."""

    def __init__(self) -> None:
        super().__init__(monotonic=100.0)


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail any test in which a request reaches the real HTTP adapter."""
    attempts: list[str] = []

    def refuse(self: HTTPAdapter, request: Any, **kwargs: Any) -> None:
        attempts.append(f"{request.method} {request.url}")
        raise UnexpectedRequest(f"a real request: {request.method} {request.url}")

    monkeypatch.setattr(HTTPAdapter, "send", refuse)
    yield attempts
    assert attempts == []


@pytest.fixture
def kraken() -> Iterator[KrakenFixtures]:
    adapter = KrakenFixtures()
    yield adapter
    assert adapter.refused == [], "requests without a fixture"
    # Every request carried the timeout we configured, in seconds.
    assert adapter.timeouts <= {TIMEOUT}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _market_data(
    adapter: KrakenFixtures,
    clock: Clock | None = None,
    rate_limit_ms: int = 1,
    **kwargs: Any,
) -> CcxtMarketData:
    # Kraken's rateLimit is 1000 ms: one test below shows the limiter at work; the
    # others space their requests by 1 ms so that they take no time.
    return CcxtMarketData(
        "kraken",
        timeout_seconds=TIMEOUT,
        exchange_config={"session": adapter.session(), "rateLimit": rate_limit_ms},
        clock=clock or HostClock(),
        **kwargs,
    )


@pytest.fixture
def market_data(kraken: KrakenFixtures, clock: FakeClock) -> CcxtMarketData:
    return _market_data(kraken, clock)


# --- Windows from the recorded candles ---------------------------------------------


@pytest.mark.parametrize("pair", PAIRS)
def test_a_window_is_the_closes_of_the_last_hour_of_candles(
    market_data: CcxtMarketData, pair: str
) -> None:
    rows = _candles(KRAKEN_IDS[pair])
    window = market_data.recent_prices(pair, NOW)
    assert window.times.dtype == np.float64 and window.prices.dtype == np.float64
    # Candle open times in Unix seconds, oldest first, one a minute up to now.
    np.testing.assert_array_equal(window.times, T0 + 60.0 * np.arange(60))
    np.testing.assert_array_equal(window.prices, [float(row[4]) for row in rows])
    assert window.times[-1] <= NOW < window.times[-1] + 60


def test_kraken_is_asked_for_its_markets_then_one_minute_candles(
    market_data: CcxtMarketData, kraken: KrakenFixtures
) -> None:
    market_data.recent_prices("ETH-EUR", NOW)
    assert kraken.requests == [
        ("/0/public/Assets", {}),
        ("/0/public/AssetPairs", {}),
        # ccxt asks from one candle before ``since``; we ask from 61 minutes back.
        ("/0/public/OHLC", {"pair": "XETHZEUR", "interval": "1", "since": str(NOW - 62 * 60)}),
    ]
    assert kraken.timeouts == {TIMEOUT}  # seconds, on every request


def test_a_window_holds_the_minutes_up_to_now_only(market_data: CcxtMarketData) -> None:
    window = market_data.recent_prices("ETH-EUR", T0 + 30 * 60 + 10)
    np.testing.assert_array_equal(window.times, T0 + 60.0 * np.arange(31))


def test_candles_older_than_the_window_are_stale_not_prices(
    market_data: CcxtMarketData,
) -> None:
    # The exchange answered, but with candles from hours ago: no prediction from them.
    with pytest.raises(MarketDataError, match=r"ccxt:kraken ETH-EUR: too few candles: 0 "):
        market_data.recent_prices("ETH-EUR", NOW + 3 * 3600)


def test_the_default_model_predicts_a_plausible_price_from_the_candles(
    market_data: CcxtMarketData,
) -> None:
    window = market_data.recent_prices("ETH-EUR", NOW)
    price = LogLinearTrendModel().predict("ETH-EUR", window, horizon_seconds=300)
    assert np.isfinite(price) and price > 0
    # The recorded hour trends up by about 1 %: five minutes on, the fitted line is
    # above where the hour started and within a fraction of a percent of the last close.
    assert price > window.prices[0]
    assert abs(price / window.prices[-1] - 1) < 0.005


# --- One exchange, one markets load, one fetch per cycle ---------------------------


def test_pairs_share_one_exchange_and_one_markets_load(
    market_data: CcxtMarketData, kraken: KrakenFixtures
) -> None:
    exchange = market_data.exchange
    for pair in PAIRS:
        market_data.recent_prices(pair, NOW)
    market_data.prefetch(PAIRS, NOW + 60)
    assert market_data.exchange is exchange
    assert isinstance(exchange, ccxt.kraken)
    assert kraken.count("/0/public/Assets") == 1
    assert kraken.count("/0/public/AssetPairs") == 1
    assert len(kraken.candles_asked()) == 8


def test_prefetch_fetches_each_pair_once_and_reads_make_no_request(
    market_data: CcxtMarketData, kraken: KrakenFixtures, clock: FakeClock
) -> None:
    market_data.prefetch([*PAIRS, "ETH-EUR"], NOW)
    assert sorted(kraken.candles_asked()) == sorted(KRAKEN_IDS.values())
    sent = len(kraken.requests)
    clock.seconds += DEFAULT_MAX_AGE_SECONDS - 0.1
    for pair in PAIRS:
        assert len(market_data.recent_prices(pair, NOW + 9).prices) == 60
    assert len(kraken.requests) == sent


def test_a_cached_window_is_read_for_max_age_seconds_then_fetched_again(
    market_data: CcxtMarketData, kraken: KrakenFixtures, clock: FakeClock
) -> None:
    assert market_data.max_age_seconds == DEFAULT_MAX_AGE_SECONDS == 10
    market_data.recent_prices("ETH-EUR", NOW)  # a miss in the API: fetched, then kept
    clock.seconds += 9.9
    market_data.recent_prices("ETH-EUR", NOW)
    assert kraken.candles_asked() == ["XETHZEUR"]
    clock.seconds += 0.1
    market_data.recent_prices("ETH-EUR", NOW)
    assert kraken.candles_asked() == ["XETHZEUR", "XETHZEUR"]


def test_each_prefetch_is_a_new_cycle(
    market_data: CcxtMarketData, kraken: KrakenFixtures, clock: FakeClock
) -> None:
    market_data.prefetch(["ETH-EUR"], NOW)
    clock.seconds += 1
    market_data.prefetch(["ETH-EUR"], NOW + 1)
    assert kraken.candles_asked() == ["XETHZEUR", "XETHZEUR"]


def test_a_long_prefetch_does_not_age_out_its_first_pairs(
    market_data: CcxtMarketData, kraken: KrakenFixtures, clock: FakeClock
) -> None:
    # Each request takes 4 s (a slow exchange, or the rate limiter's spacing): the
    # whole prefetch takes longer than the max age, yet every read hits its cache.
    def slow() -> None:
        clock.seconds += 4

    kraken.on_request = slow
    market_data.prefetch(PAIRS, NOW)
    kraken.on_request = lambda: None
    sent = len(kraken.requests)
    for pair in PAIRS:
        market_data.recent_prices(pair, NOW)
    assert len(kraken.requests) == sent


def test_threads_missing_the_same_pair_at_once_fetch_it_once(
    market_data: CcxtMarketData, kraken: KrakenFixtures
) -> None:
    # An API process's threads: concurrent misses wait for one fetch, then read it.
    with ThreadPoolExecutor(8) as pool:
        windows = list(pool.map(lambda _: market_data.recent_prices("ETH-EUR", NOW), range(16)))
    assert all(len(window.prices) == 60 for window in windows)
    assert kraken.candles_asked() == ["XETHZEUR"]
    assert kraken.count("/0/public/AssetPairs") == 1


# The gaps are measured where the fake exchange receives each request, to 10 ms: run
# alone (`make test`'s serial pass), where no neighbour delays one arrival and not the next.
@pytest.mark.serial
def test_the_rate_limiter_spaces_requests(kraken: KrakenFixtures) -> None:
    market_data = _market_data(kraken, rate_limit_ms=100)
    market_data.prefetch(PAIRS, NOW)
    gaps = np.diff(kraken.sent_at)
    assert len(gaps) == 5 and gaps.min() >= 0.09  # markets (2), then 4 pairs


def test_production_exchange_has_the_rate_limit_on_and_an_explicit_timeout() -> None:
    market_data = CcxtMarketData(
        "kraken",
        timeout_seconds=TIMEOUT,
        clock=HostClock(),
        exchange_config={"timeout": 60_000, "enableRateLimit": False},  # ours win
    )
    exchange = market_data.exchange  # created, no request made
    assert market_data.name == "ccxt:kraken"
    assert isinstance(exchange, ccxt.kraken)
    assert exchange.enableRateLimit is True
    assert exchange.timeout == 2_500  # milliseconds
    assert exchange.rateLimit == 1_000  # Kraken's public limit, as ccxt knows it
    assert isinstance(exchange.session, requests.Session)
    assert market_data.exchange is exchange


def test_build_market_data_makes_a_ccxt_source_with_the_timeout() -> None:
    source = build_market_data("ccxt:kraken", timeout_seconds=1.5, clock=HostClock())
    assert isinstance(source, CcxtMarketData)
    assert source.name == "ccxt:kraken"
    assert source.exchange.timeout == 1_500


# --- Every failure is a MarketDataError naming the exchange, the pair, the cause ---


@pytest.mark.parametrize(
    ("answer", "message", "cause"),
    [
        (requests.exceptions.ReadTimeout("read timed out"),
         r"timed out \(timeout 2\.5 s\): RequestTimeout: kraken GET https://api\.kraken\.com/0/public/OHLC",
         ccxt.RequestTimeout),
        (requests.exceptions.ConnectionError("Connection refused"),
         r"network error: NetworkError: kraken GET", ccxt.NetworkError),
        (Reply(429, text=""),
         r"rate limited \(not retried; the next refresh tries again\): RateLimitExceeded: "
         r"kraken GET .* 429 Too Many Requests",
         ccxt.RateLimitExceeded),
        (Reply(fixture="error_rate_limit.json"),
         r"rate limited \(not retried; the next refresh tries again\): DDoSProtection: "
         r".*EAPI:Rate limit exceeded",
         ccxt.DDoSProtection),
        (Reply(fixture="error_unknown_pair.json"),
         r"exchange error: ExchangeError: kraken .*EQuery:Unknown asset pair", ccxt.ExchangeError),
        (Reply(fixture="error_invalid_pair.json"),
         r"unknown symbol ETH/EUR: BadSymbol: kraken .*EQuery:Invalid asset pair",
         ccxt.BadSymbol),
        (Reply(503, text="<html>Service Unavailable</html>"),
         r"exchange unavailable: ExchangeNotAvailable: kraken GET .* 503",
         ccxt.ExchangeNotAvailable),
    ],
    ids=["timeout", "connection", "http-429", "kraken-rate-limit", "unknown-asset-pair",
         "invalid-asset-pair", "http-503"],
)  # fmt: skip
def test_a_failed_fetch_is_a_clear_market_data_error(
    market_data: CcxtMarketData,
    kraken: KrakenFixtures,
    answer: Reply | Exception,
    message: str,
    cause: type[Exception],
) -> None:
    kraken.reply("/0/public/OHLC", answer, pair="ETH-EUR")
    with pytest.raises(MarketDataError, match=r"^ccxt:kraken ETH-EUR: " + message) as raised:
        market_data.recent_prices("ETH-EUR", NOW)
    assert isinstance(raised.value.__cause__, cause)
    # Not retried: one request, and the next read within the max age makes none.
    assert kraken.candles_asked() == ["XETHZEUR"]
    with pytest.raises(MarketDataError, match="ccxt:kraken ETH-EUR"):
        market_data.recent_prices("ETH-EUR", NOW)
    assert kraken.candles_asked() == ["XETHZEUR"]
    # The other pairs are unaffected.
    assert len(market_data.recent_prices("BTC-EUR", NOW).prices) == 60


@pytest.mark.parametrize("count", [0, 1])
def test_fewer_than_two_candles_is_an_error(
    market_data: CcxtMarketData, kraken: KrakenFixtures, count: int
) -> None:
    rows = _candles("XETHZEUR")[-count:] if count else []
    body = {"error": [], "result": {"XETHZEUR": rows, "last": T0}}
    kraken.reply("/0/public/OHLC", Reply(text=json.dumps(body)), pair="ETH-EUR")
    with pytest.raises(
        MarketDataError, match=rf"^ccxt:kraken ETH-EUR: too few candles: {count} .*need at least 2"
    ):
        market_data.recent_prices("ETH-EUR", NOW)


def test_malformed_candles_are_an_error(
    market_data: CcxtMarketData, kraken: KrakenFixtures
) -> None:
    rows = _candles("XETHZEUR")
    rows[10][4] = "0"
    body = {"error": [], "result": {"XETHZEUR": rows, "last": T0}}
    kraken.reply("/0/public/OHLC", Reply(text=json.dumps(body)), pair="ETH-EUR")
    with pytest.raises(MarketDataError, match=r"^ccxt:kraken ETH-EUR: malformed candles"):
        market_data.recent_prices("ETH-EUR", NOW)


def test_a_symbol_the_exchange_does_not_list_is_refused_without_a_request(
    market_data: CcxtMarketData, kraken: KrakenFixtures
) -> None:
    with pytest.raises(
        MarketDataError,
        match=r"^ccxt:kraken DOGE-EUR: unknown symbol DOGE/EUR: not among the exchange's 4 markets",
    ):
        market_data.recent_prices("DOGE-EUR", NOW)
    assert kraken.candles_asked() == []


def test_markets_failing_to_load_fail_the_pair(
    market_data: CcxtMarketData, kraken: KrakenFixtures, clock: FakeClock
) -> None:
    kraken.reply("/0/public/Assets", requests.exceptions.ReadTimeout("read timed out"))
    with pytest.raises(
        MarketDataError,
        match=r"^ccxt:kraken ETH-EUR: could not load the exchange's markets: timed out",
    ):
        market_data.recent_prices("ETH-EUR", NOW)
    # The next try (after the max age) loads them.
    del kraken.replies[("/0/public/Assets", None)]
    clock.seconds += DEFAULT_MAX_AGE_SECONDS
    assert len(market_data.recent_prices("ETH-EUR", NOW).prices) == 60


def test_markets_are_reloaded_hourly_or_sooner_after_an_unknown_symbol(
    market_data: CcxtMarketData, kraken: KrakenFixtures, clock: FakeClock
) -> None:
    # (Each read below is of a pair not read before: a fetch, not the cache.)
    market_data.recent_prices("ETH-EUR", NOW)
    clock.seconds += 3599
    market_data.recent_prices("BTC-EUR", NOW)
    assert kraken.count("/0/public/AssetPairs") == 1
    clock.seconds += 1
    market_data.recent_prices("ETH-USD", NOW)
    assert kraken.count("/0/public/AssetPairs") == 2
    # A pair missing from the markets (a new listing?): recheck in five minutes, once.
    with pytest.raises(MarketDataError, match="unknown symbol"):
        market_data.recent_prices("DOGE-EUR", NOW)
    clock.seconds += 299
    market_data.recent_prices("BTC-USD", NOW)
    assert kraken.count("/0/public/AssetPairs") == 2
    clock.seconds += 1
    market_data.recent_prices("ETH-EUR", NOW)
    assert kraken.count("/0/public/AssetPairs") == 3
    # Still unknown after the reload: the next recheck is five minutes after it.
    with pytest.raises(MarketDataError, match="unknown symbol"):
        market_data.recent_prices("DOGE-EUR", NOW)
    clock.seconds += 299
    market_data.recent_prices("BTC-EUR", NOW)
    assert kraken.count("/0/public/AssetPairs") == 3


def test_a_failed_markets_reload_keeps_the_markets_it_has(
    market_data: CcxtMarketData, kraken: KrakenFixtures, clock: FakeClock
) -> None:
    market_data.recent_prices("ETH-EUR", NOW)
    kraken.reply("/0/public/Assets", Reply(fixture="error_rate_limit.json"))
    clock.seconds += 3600
    assert len(market_data.recent_prices("ETH-EUR", NOW).prices) == 60


def test_a_rate_limit_stops_the_prefetch_and_nothing_is_retried(
    market_data: CcxtMarketData, kraken: KrakenFixtures, clock: FakeClock
) -> None:
    kraken.reply("/0/public/OHLC", Reply(fixture="error_rate_limit.json"), pair="BTC-EUR")
    market_data.prefetch(PAIRS, NOW)
    # ETH-EUR fetched, BTC-EUR rate limited, the rest not requested at all.
    assert kraken.candles_asked() == ["XETHZEUR", "XXBTZEUR"]
    assert len(market_data.recent_prices("ETH-EUR", NOW).prices) == 60
    with pytest.raises(MarketDataError, match=r"^ccxt:kraken BTC-EUR: rate limited"):
        market_data.recent_prices("BTC-EUR", NOW)
    for pair in ("ETH-USD", "BTC-USD"):
        with pytest.raises(
            MarketDataError,
            match=rf"^ccxt:kraken {pair}: not requested in this refresh, after: "
            r"ccxt:kraken BTC-EUR: rate limited",
        ):
            market_data.recent_prices(pair, NOW)
    assert len(kraken.candles_asked()) == 2
    # The next refresh tries every pair again.
    clock.seconds += 20
    market_data.prefetch(PAIRS, NOW + 20)
    assert kraken.candles_asked()[2:] == ["XETHZEUR", "XXBTZEUR"]


def test_one_timeout_fails_one_pair_two_in_a_row_stop_the_prefetch(
    market_data: CcxtMarketData, kraken: KrakenFixtures
) -> None:
    timeout = requests.exceptions.ReadTimeout("read timed out")
    kraken.reply("/0/public/OHLC", timeout, pair="ETH-EUR")
    market_data.prefetch(PAIRS, NOW)
    assert len(kraken.candles_asked()) == 4
    kraken.requests.clear()
    kraken.reply("/0/public/OHLC", timeout, pair="BTC-EUR")
    market_data.prefetch(PAIRS, NOW)
    assert kraken.candles_asked() == ["XETHZEUR", "XXBTZEUR"]
    with pytest.raises(MarketDataError, match="ETH-USD: not requested in this refresh"):
        market_data.recent_prices("ETH-USD", NOW)


# --- Construction -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ccxt:nosuchexchange", "ccxt:base"])
def test_an_unknown_exchange_is_refused_naming_the_setting(name: str) -> None:
    with pytest.raises(ValueError, match=r"^MARKET_DATA: ccxt has no exchange"):
        build_market_data(name, TIMEOUT, HostClock())


def test_without_ccxt_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ccxt", None)  # what a missing package looks like
    monkeypatch.delitem(sys.modules, "predictions.model.ccxt_market_data")
    with pytest.raises(ImportError, match=r"pip install 'prediction-cache\[live\]'"):
        importlib.import_module("predictions.model.ccxt_market_data")
    with pytest.raises(ImportError, match=r"pip install 'prediction-cache\[live\]'"):
        build_market_data("ccxt:kraken", TIMEOUT, HostClock())


# --- Through the predictor and a refresh --------------------------------------------


@pytest.fixture
def live(kraken: KrakenFixtures) -> Iterator[KrakenFixtures]:
    """The recording replayed as if it were now: refreshes store with real time."""
    kraken.shift_to = time.time()
    yield kraken


def test_compute_many_prefetches_then_reads_from_the_cache(
    live: KrakenFixtures, settings: Settings
) -> None:
    model = CountingModel()
    predictor = Predictor(
        model, _market_data(live), 300, settings.prediction_ttl_seconds, clock=HostClock()
    )
    predictions, failures = predictor.compute_many(list(PAIRS))
    assert failures == {}
    assert [p.pair for p in predictions] == list(PAIRS)
    assert {p.data_source for p in predictions} == {"ccxt:kraken"}
    assert sorted(live.candles_asked()) == sorted(KRAKEN_IDS.values())


def test_a_failing_fetch_fails_its_pair_only_and_keeps_its_previous_prediction(
    live: KrakenFixtures,
    settings: Settings,
    redis_client: fakeredis.FakeRedis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = PredictionStore(
        redis_client, grace_seconds=settings.stale_grace_seconds, clock=HostClock()
    )
    predictor = Predictor(
        LogLinearTrendModel(),
        _market_data(live),
        300,
        settings.prediction_ttl_seconds,
        clock=HostClock(),
    )
    wiring = wire(
        settings, role="test", redis_client=redis_client, clock=store.clock, predictor=predictor
    )
    assert refresh_batch(list(PAIRS), wiring) == 4
    before = store.read_many(list(PAIRS)).predictions
    assert all(p is not None and p.data_source == "ccxt:kraken" for p in before.values())
    key = prediction_key("ETH-EUR", LogLinearTrendModel.version)
    stored, ttl = redis_client.get(key), redis_client.pttl(key)

    live.reply("/0/public/OHLC", requests.exceptions.ReadTimeout("read timed out"), pair="ETH-EUR")
    time.sleep(0.01)  # the next refresh computes at a later time
    assert refresh_batch(list(PAIRS), wiring) == 3
    after = store.read_many(list(PAIRS)).predictions
    assert after["ETH-EUR"] == before["ETH-EUR"]
    for pair in ("BTC-EUR", "ETH-USD", "BTC-USD"):
        assert after[pair] is not None and before[pair] is not None
        assert after[pair].computed_at > before[pair].computed_at  # type: ignore[union-attr]
    assert redis_client.get(key) == stored  # untouched: same value...
    assert 0 < redis_client.pttl(key) <= ttl  # ...and the same expiry, not extended
    assert "refreshed pairs=4 written=3 failed=1 skipped=0" in caplog.text
    assert "prediction failed pair=ETH-EUR" in caplog.text
    assert "ccxt:kraken ETH-EUR: timed out (timeout 2.5 s)" in caplog.text
