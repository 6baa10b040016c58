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
BROKER_DATABASES = ("next", "same")
# What Celery accepts as a broker here: Redis (TCP, TLS, socket), kombu's Sentinel
# transport, and AMQP (RabbitMQ), plain or over TLS.
BROKER_SCHEMES = ("redis", "rediss", "redis+socket", "sentinel", "amqp", "amqps", "pyamqp")
# "synthetic" (offline, the default), or "ccxt:<exchange id>" such as ccxt:kraken (live
# 1-minute candles; needs the `live` extra).
MARKET_DATA_PATTERN = re.compile(r"synthetic|ccxt:[a-z0-9_]{2,40}")


class SettingsError(ValueError):
    """A setting has a value the service cannot run with."""


@dataclasses.dataclass(frozen=True)
class Settings:
    """The typed configuration shared by the API, the worker and beat."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    # Sentinels (host, port) that name the cache's master, and the master's name there;
    # empty means REDIS_URL's host is the server. REDIS_URL still gives db, user, TLS.
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    redis_sentinel_master: str | None = None
    # None means: the cache's Redis (through the same sentinels, if any), next database
    # number, or the same one (see broker_url). Checked by the worker and beat only,
    # when they read broker_url: the API never uses the broker.
    celery_broker_url: str | None = None
    # "next": the broker in the cache's database + 1; "same": in the cache's own
    # database, under a key prefix (for a managed Redis that offers only database 0).
    celery_broker_database: str = "next"
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
    # API processes subscribe to every prediction write in Redis, so a near copy that
    # the subscription keeps current is served until its own freshness ends, without a
    # Redis round trip (while the subscription is healthy; else NEAR_CACHE_SECONDS).
    near_cache_follows_writes: bool = True
    # Model computations one API process runs at once, each on a thread of its own (so a
    # CPU-bound model never stalls the event loop serving hits); further misses queue
    # for a thread, within COMPUTE_TIMEOUT_SECONDS.
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
    # Connections one API process holds at once (gevent: each is a greenlet, so slow or
    # idle clients cost memory, about 20 KB each, not threads). Past it the process stops
    # accepting and new connections wait in the listen backlog for another process.
    api_worker_connections: int = 2000
    # A client must send a whole request's headers within this long, and an idle
    # keep-alive connection is closed after it: slow or silent clients are cut.
    api_header_timeout_seconds: int = 5
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
        if bool(self.redis_sentinels) != bool(self.redis_sentinel_master):
            raise SettingsError(
                "REDIS_SENTINELS and REDIS_SENTINEL_MASTER go together: set both (the "
                "sentinels and the name they know the master by), or neither"
            )
        if self.redis_sentinels and self.redis_url.startswith("unix:"):
            raise SettingsError(
                "REDIS_SENTINELS: the sentinels name the master by host and port, so "
                "REDIS_URL must be a redis:// or rediss:// URL (its host is not used)"
            )

    @property
    def broker_url(self) -> str:
        """Celery's broker: set explicitly (and checked here), or the cache's Redis."""
        if self.celery_broker_url:
            return _broker_url("CELERY_BROKER_URL", self.celery_broker_url)
        offset = 0 if self.celery_broker_database == "same" else 1
        url = _next_database(self.redis_url, offset)
        if self.redis_sentinels:
            return _sentinel_broker_url(url, self.redis_sentinels)
        return url

    @property
    def broker_key_prefix(self) -> str | None:
        """The prefix of the broker's keys when it shares the cache's database."""
        if self.celery_broker_url or self.celery_broker_database != "same":
            return None
        return "celery:"

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
        read("redis_sentinels", _sentinels)
        read("redis_sentinel_master", _sentinel_master)
        # Not checked here: the API reads these settings too and never uses the broker.
        read("celery_broker_url", lambda _name, raw: raw)
        read("celery_broker_database", _choice(BROKER_DATABASES))
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
        read("near_cache_follows_writes", _boolean)
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
        read("api_worker_connections", _bounded(int, "a whole number >= 10", lambda v: v >= 10))
        read("api_header_timeout_seconds", _positive_int)
        read("worker_metrics_bind", _bind_or_off)
        read("log_level", _log_level)
        read("log_format", _choice(LOG_FORMATS))
        return cls(**values)  # type: ignore[arg-type]


def _next_database(redis_url: str, offset: int = 1) -> str:
    """kombu's URL of redis_url's server, ``offset`` databases up."""
    parts = urllib.parse.urlsplit(redis_url)
    query = urllib.parse.parse_qs(parts.query)
    db = _database(redis_url)
    if db + offset > 15:
        raise SettingsError(
            "CELERY_BROKER_URL: REDIS_URL uses database 15, so there is no next "
            "database for the broker; set CELERY_BROKER_URL explicitly, or "
            "CELERY_BROKER_DATABASE=same"
        )
    query.pop("db", None)
    if parts.scheme == "unix":
        # kombu's spelling of a socket, with the database as virtual_host.
        query["virtual_host"] = [str(db + offset)]
        return f"redis+socket://{parts.path}?{urllib.parse.urlencode(query, doseq=True)}"
    return urllib.parse.urlunsplit(
        (
            parts.scheme,
            parts.netloc,
            f"/{db + offset}",
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
    """A broker URL Celery can use; kombu's Sentinel form joins several with ';'."""
    expected = (
        "a broker URL: redis://, rediss://, redis+socket://, amqp://, amqps:// or "
        "sentinel://host:port[;sentinel://host:port...]"
    )
    urls = raw.split(";")
    schemes = set()
    for url in urls:
        try:
            parts = urllib.parse.urlsplit(url.strip())
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError:
            raise _fail_secret(name, expected) from None
        schemes.add(parts.scheme)
        if parts.scheme not in BROKER_SCHEMES or not (parts.netloc or parts.path):
            raise _fail_secret(name, expected, parts.scheme)
    if len(urls) > 1 and schemes != {"sentinel"}:
        raise _fail_secret(name, "';' only between sentinel:// URLs (kombu's Sentinel form)")
    return raw


def _fail_secret(name: str, expected: str, scheme: str | None = None) -> SettingsError:
    # The value may hold a password, so it is never echoed: only its scheme is.
    got = f", got a {scheme}:// URL" if scheme else ""
    return SettingsError(f"{name}: expected {expected}{got} (value not shown)")


def _sentinel_broker_url(url: str, sentinels: tuple[tuple[str, int], ...]) -> str:
    """kombu's Sentinel form of a redis URL: one sentinel:// URL per sentinel, each
    with the URL's credentials and database (the master's name goes in the transport
    options)."""
    parts = urllib.parse.urlsplit(url)
    credentials, _, _ = parts.netloc.rpartition("@")
    auth = f"{credentials}@" if credentials else ""
    path = f"/{_database(url)}"
    return ";".join(f"sentinel://{auth}{_host_port(h, p)}{path}" for h, p in sentinels)


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _sentinels(name: str, raw: str) -> tuple[tuple[str, int], ...]:
    expected = "comma-separated HOST:PORT of the sentinels, e.g. s1:26379,s2:26379"
    found: list[tuple[str, int]] = []
    for item in raw.split(","):
        host, sep, port = item.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise _fail(name, expected, raw)
        found.append((host, int(port)))
    return tuple(found)


def _sentinel_master(name: str, raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", raw):
        raise _fail(name, "the master's name as the sentinels know it, e.g. mymaster", raw)
    return raw


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


def _boolean(name: str, raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise _fail(name, "1 or 0 (true or false)", raw)


def _log_level(name: str, raw: str) -> str:
    level = raw.upper()
    if level not in LOG_LEVELS:
        raise _fail(name, "one of " + ", ".join(LOG_LEVELS), raw)
    return level
