"""Every setting of the service, read from the environment in one place.

``Settings.from_env()`` is the only code that looks at ``os.environ``. Each value is
coerced and validated here, so a bad value stops a process at start-up with a message
that names the variable, instead of failing later on the first request.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import TypeVar

from predictions.keys import InvalidPair, canonical_pair
from predictions.redact import redact

N = TypeVar("N", int, float)

DEFAULT_PAIRS = ("ETH-EUR", "BTC-EUR", "ETH-USD", "BTC-USD")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("json", "text")
# "synthetic" (offline, the default), or "ccxt:<exchange id>" such as ccxt:kraken (live
# 1-minute candles; needs the `live` extra).
MARKET_DATA_PATTERN = re.compile(r"synthetic|ccxt:[a-z0-9_]{2,40}")


class SettingsError(ValueError):
    """A setting has a value the service cannot run with."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """The typed configuration shared by the API, the worker and beat."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    # None means: the cache's Redis server, next database number (see broker_url()).
    celery_broker_url: str | None = None
    pairs: tuple[str, ...] = DEFAULT_PAIRS
    # The default model reads 1-minute prices, so its answer cannot change more often
    # than once a minute: a prediction up to 60 s old is as good as a new one.
    prediction_ttl_seconds: float = 60.0
    # A third of the TTL: two refreshes in a row can fail before a known pair goes cold.
    refresh_interval_seconds: float = 20.0
    prediction_horizon_seconds: int = 300
    simulated_model_latency_seconds: float = 1.0
    model: str = "predictions.model:LogLinearTrendModel"
    market_data: str = "synthetic"
    # Live market data: how long one exchange request may take.
    market_data_timeout_seconds: float = 5.0
    # How long one computation may hold a pair's lock, and so how long a request that
    # waits for someone else's computation waits at most.
    compute_timeout_seconds: float = 10.0
    # How long an API process may answer from its own copy of a prediction read from
    # Redis (never past the prediction's expiry); 0 reads Redis on every request.
    near_cache_seconds: float = 0.25
    # Model computations one API process runs at once; a miss beyond that is a 503.
    max_concurrent_computes: int = 2
    # How long past its freshness a prediction stays in Redis and may still be served,
    # marked stale, while it is recomputed in the background or while that fails.
    stale_grace_seconds: float = 60.0
    # XFetch's beta: a read at t seconds before a prediction's freshness ends refreshes
    # it early with probability exp(-t / (compute_seconds * beta)); 0 turns it off.
    early_refresh_beta: float = 1.0
    # After a computation of a pair fails, an API process does not run the model for
    # that pair again for this long (it serves stale, or 503 past the grace).
    failed_compute_backoff_seconds: float = 1.0
    # Consecutive Redis failures after which an API process stops trying Redis for
    # CIRCUIT_OPEN_SECONDS, so that a frozen Redis costs one timeout per interval.
    circuit_failure_threshold: int = 3
    circuit_open_seconds: float = 1.0
    redis_socket_timeout_seconds: float = 0.3
    redis_connect_timeout_seconds: float = 0.3
    redis_max_connections: int = 32
    refresh_batch_size: int = 100
    worker_concurrency: int = 4
    api_bind: str = "127.0.0.1:8000"
    api_workers: int = 2
    api_threads: int = 8
    # The worker's Prometheus endpoint, HOST:PORT, or "off".
    worker_metrics_bind: str = "127.0.0.1:9808"
    log_level: str = "INFO"
    # One JSON object per line (for log pipelines), or plain text (for reading).
    log_format: str = "json"

    def __post_init__(self) -> None:
        if self.refresh_interval_seconds >= self.prediction_ttl_seconds:
            raise SettingsError(
                "REFRESH_INTERVAL_SECONDS must be shorter than PREDICTION_TTL_SECONDS "
                f"(got {self.refresh_interval_seconds:g} >= "
                f"{self.prediction_ttl_seconds:g}): otherwise predictions expire "
                "before beat refreshes them and requests wait for the model"
            )
        if self.compute_timeout_seconds <= self.simulated_model_latency_seconds:
            raise SettingsError(
                "COMPUTE_TIMEOUT_SECONDS must be longer than "
                "SIMULATED_MODEL_LATENCY_SECONDS (got "
                f"{self.compute_timeout_seconds:g} <= "
                f"{self.simulated_model_latency_seconds:g}): no computation could finish"
            )
        if not 0 <= self.near_cache_seconds < 1:
            raise SettingsError(
                f"NEAR_CACHE_SECONDS must be at least 0 and below 1 second (got "
                f"{self.near_cache_seconds:g}): a near copy must not lag Redis for long"
            )
        if not self.pairs:
            raise SettingsError("PAIRS must name at least one pair, e.g. ETH-EUR")

    @property
    def broker_url(self) -> str:
        """Celery's broker: set explicitly, or the cache's server one database up."""
        if self.celery_broker_url:
            return self.celery_broker_url
        return _next_database(self.redis_url)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from environment variables; unset ones take the defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}

        def read(field: str, coerce: Callable[[str, str], object]) -> None:
            name = field.upper()
            raw = env.get(name)
            if raw is not None and raw.strip() != "":
                values[field] = coerce(name, raw.strip())

        read("redis_url", _redis_url)
        read("celery_broker_url", _broker_url)
        read("pairs", _pairs)
        read("prediction_ttl_seconds", _positive_float)
        read("refresh_interval_seconds", _positive_float)
        read("prediction_horizon_seconds", _positive_int)
        read("simulated_model_latency_seconds", _non_negative_float)
        read("model", _import_string)
        read("market_data", _market_data)
        read("market_data_timeout_seconds", _positive_float)
        read("compute_timeout_seconds", _positive_float)
        read("near_cache_seconds", _non_negative_float)
        read("max_concurrent_computes", _positive_int)
        read("stale_grace_seconds", _non_negative_float)
        read("early_refresh_beta", _bounded(float, "a number >= 0", lambda value: value >= 0))
        read("failed_compute_backoff_seconds", _non_negative_float)
        read("circuit_failure_threshold", _positive_int)
        read("circuit_open_seconds", _positive_float)
        read("redis_socket_timeout_seconds", _positive_float)
        read("redis_connect_timeout_seconds", _positive_float)
        read("redis_max_connections", _positive_int)
        read("refresh_batch_size", _positive_int)
        read("worker_concurrency", _positive_int)
        read("api_bind", _bind)
        read("api_workers", _positive_int)
        read("api_threads", _positive_int)
        read("worker_metrics_bind", _bind_or_off)
        read("log_level", _log_level)
        read("log_format", _choice(LOG_FORMATS))
        return cls(**values)  # type: ignore[arg-type]


def _next_database(redis_url: str) -> str:
    parts = urllib.parse.urlsplit(redis_url)
    query = urllib.parse.parse_qs(parts.query)
    db = _database(redis_url)
    if db >= 15:
        raise SettingsError(
            "CELERY_BROKER_URL: REDIS_URL uses database 15, so there is no next "
            "database for the broker; set CELERY_BROKER_URL explicitly"
        )
    query.pop("db", None)
    if parts.scheme == "unix":
        # kombu's spelling of a socket, with the database as virtual_host.
        query["virtual_host"] = [str(db + 1)]
        return f"redis+socket://{parts.path}?{urllib.parse.urlencode(query, doseq=True)}"
    return urllib.parse.urlunsplit(
        (
            parts.scheme,
            parts.netloc,
            f"/{db + 1}",
            urllib.parse.urlencode(query, doseq=True),
            "",
        )
    )


def _database(url: str) -> int:
    """The database number of a redis-py URL (path /N, or ?db=N for sockets)."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    if "db" in query:
        return int(query["db"][0])
    if parts.scheme == "unix":
        return 0
    return int(parts.path.strip("/") or 0)


def _fail(name: str, expected: str, raw: str) -> SettingsError:
    # redact: a malformed REDIS_URL still carries its password.
    return SettingsError(f"{name}: expected {expected}, got {redact(raw)!r}")


def _bounded(
    kind: Callable[[str], N], expected: str, accept: Callable[[N], bool]
) -> Callable[[str, str], N]:
    """A coercer to int or float that refuses NaN, infinities and values not accepted."""

    def coerce(name: str, raw: str) -> N:
        try:
            value = kind(raw)
        except ValueError:
            raise _fail(name, expected, raw) from None
        if not math.isfinite(value) or not accept(value):
            raise _fail(name, expected, raw)
        return value

    return coerce


_positive_float = _bounded(float, "a number of seconds > 0", lambda value: value > 0)
_non_negative_float = _bounded(float, "a number of seconds >= 0", lambda value: value >= 0)
_positive_int = _bounded(int, "a whole number > 0", lambda value: value > 0)


def _redis_url(name: str, raw: str) -> str:
    expected = "a redis://, rediss:// or unix:// URL with a database number 0-15"
    try:
        parts = urllib.parse.urlsplit(raw)
        database = _database(raw)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise _fail(name, expected, raw) from None
    if parts.scheme not in ("redis", "rediss", "unix") or not 0 <= database <= 15:
        raise _fail(name, expected, raw)
    return raw


def _broker_url(name: str, raw: str) -> str:
    # kombu also spells a socket redis+socket:///path?virtual_host=N.
    return raw if raw.startswith("redis+socket://") else _redis_url(name, raw)


def _pairs(name: str, raw: str) -> tuple[str, ...]:
    pairs: list[str] = []
    for item in raw.split(","):
        if not item.strip():
            continue
        try:
            pair = canonical_pair(item.strip())
        except InvalidPair as exc:
            raise SettingsError(f"{name}: {exc}") from None
        base, quote = pair.split("-")
        if base == quote:
            raise SettingsError(f"{name}: {pair} is not a pair: its base and quote are one asset")
        if pair not in pairs:
            pairs.append(pair)
    if not pairs:
        raise _fail(name, "comma-separated pairs such as ETH-EUR,BTC-USD", raw)
    return tuple(pairs)


def _import_string(name: str, raw: str) -> str:
    module, _, attribute = raw.partition(":")
    if not module or not attribute:
        raise _fail(name, "an import string such as package.module:attribute", raw)
    return raw


def _market_data(name: str, raw: str) -> str:
    if not MARKET_DATA_PATTERN.fullmatch(raw):
        raise _fail(name, "synthetic, or ccxt:<exchange id> such as ccxt:kraken", raw)
    return raw


def _choice(choices: tuple[str, ...]) -> Callable[[str, str], str]:
    def coerce(name: str, raw: str) -> str:
        if raw not in choices:
            raise _fail(name, "one of " + ", ".join(choices), raw)
        return raw

    return coerce


def _bind(name: str, raw: str) -> str:
    host, sep, port = raw.rpartition(":")
    if raw.startswith("unix:"):
        return raw
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise _fail(name, "HOST:PORT such as 127.0.0.1:8000, or unix:PATH", raw)
    return raw


def _bind_or_off(name: str, raw: str) -> str:
    if raw.lower() == "off":
        return "off"
    if raw.startswith("unix:"):
        raise _fail(name, "HOST:PORT such as 127.0.0.1:9808, or off", raw)
    return _bind(name, raw)


def _log_level(name: str, raw: str) -> str:
    level = raw.upper()
    if level not in LOG_LEVELS:
        raise _fail(name, "one of " + ", ".join(LOG_LEVELS), raw)
    return level
