"""Every setting of the service, read from the environment in one place.

``Settings.from_env()`` is the only code that looks at ``os.environ``. Each value is
coerced and validated here, so a bad value stops a process at start-up with a message
that names the variable, instead of failing later on the first request.

Each setting is declared once, as a ``setting(default, coerce, doc)`` field of
``Settings``; reading it and the settings table of docs/operations.md both come from
that declaration (``python -m predictions.settings --markdown`` prints the table).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import urllib.parse
import warnings
from collections.abc import Callable, Mapping
from typing import TypeVar

from predictions.infra.keys import InvalidPair, canonical_pair
from predictions.infra.redaction import redact

N = TypeVar("N", int, float)
T = TypeVar("T")

DEFAULT_PAIRS = ("ETH-EUR", "BTC-EUR", "ETH-USD", "BTC-USD")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("json", "text")
BROKER_DATABASES = ("next", "same")
PRECOMPUTE_MODES = ("all", "asked", "off")
# Spellings of "off" that `make run PRECOMPUTE=0` has always taken.
_OFF = ("0", "false", "no", "none")
# What Celery accepts as a broker here: Redis (TCP, TLS, socket), kombu's Sentinel
# transport, and AMQP (RabbitMQ), plain or over TLS.
BROKER_SCHEMES = ("redis", "rediss", "redis+socket", "sentinel", "amqp", "amqps", "pyamqp")
# "synthetic" (offline, the default), or "ccxt:<exchange id>" such as ccxt:kraken (live
# 1-minute candles; needs the `live` extra).
MARKET_DATA_PATTERN = re.compile(r"synthetic|ccxt:[a-z0-9_]{2,40}")


# Settings renamed, new name -> old name: the old one is still read, with a warning,
# until the release named here (the same one that drops the deprecated task name).
RENAMED = {"EARLY_REVALIDATION_BETA": "EARLY_REFRESH_BETA"}
RENAMED_UNTIL = "0.3.0"


class SettingsError(ValueError):
    """A setting has a value the service cannot run with."""


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
_non_negative_int = _bounded(int, "a whole number >= 0", lambda value: value >= 0)


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


def _precompute(name: str, raw: str) -> str:
    mode = raw.strip().lower()
    return _choice(PRECOMPUTE_MODES)(name, "off" if mode in _OFF else mode)


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


def _as_given(_name: str, raw: str) -> str:
    # CELERY_BROKER_URL is checked when the worker or beat reads Settings.broker_url:
    # the API reads these settings too and never uses the broker.
    return raw


def setting(default: T, coerce: Callable[[str, str], T], doc: str, *, shown: str = "") -> T:
    """Declare one setting: its default, the coercer of its variable, its docs sentence.

    The variable is the field's name in upper case. ``doc`` is the sentence of the
    settings table in docs/operations.md (Markdown; links relative to docs/), and
    ``shown`` the table's default when the value alone would not say it.
    """
    # A field-driven reader of our own rather than pydantic-settings: the coercers
    # already give the messages we want (naming the variable, never echoing a secret),
    # and a dependency would add a second way to spell bounds and errors.
    return dataclasses.field(
        default=default, metadata={"coerce": coerce, "doc": doc, "shown": shown}
    )


@dataclasses.dataclass(frozen=True)
class Settings:
    """The typed configuration shared by the API, the worker and beat.

    Each field is one ``setting(...)``: ``from_env`` reads every field's variable and
    ``markdown_table`` documents it, so a setting cannot exist without both.
    """

    redis_url: str = setting(
        "redis://127.0.0.1:6379/0",
        _redis_url,
        "the prediction cache (`redis://`, `rediss://` for TLS, `unix://`; user and "
        "password in the URL)",
    )
    # Empty means REDIS_URL's host is the server. REDIS_URL still gives db, user, TLS.
    redis_sentinels: tuple[tuple[str, int], ...] = setting(
        (),
        _sentinels,
        "comma-separated `host:port` of Redis Sentinels that name the cache's master; with "
        "them, every process reaches Redis through Sentinel (`REDIS_URL` still gives "
        "database, user, password and TLS). See [several-machines.md](several-machines.md)",
    )
    redis_sentinel_master: str | None = setting(
        None,
        _sentinel_master,
        "the master's name at those sentinels; set together with `REDIS_SENTINELS`",
    )
    # None means: the cache's Redis (through the same sentinels, if any), next database
    # number, or the same one (see broker_url).
    celery_broker_url: str | None = setting(
        None,
        _as_given,
        "Celery's broker: `redis://`, `rediss://`, `redis+socket://`, `sentinel://` "
        "(kombu's `;`-separated form) or `amqp://`/`amqps://` (RabbitMQ). Unset, it "
        "follows the cache's Redis (and its sentinels) in a separate database, so "
        "scanning or flushing the cache never touches the queues. Only the worker and "
        "beat read it",
        shown="`REDIS_URL`'s server, next database (`/1`)",
    )
    celery_broker_database: str = setting(
        "next",
        _choice(BROKER_DATABASES),
        "with `CELERY_BROKER_URL` unset: `next` puts the queues in the cache's database "
        "+ 1, `same` in the cache's own database under a `celery:` key prefix (a managed "
        "Redis that offers only database 0)",
    )
    pairs: tuple[str, ...] = setting(
        DEFAULT_PAIRS,
        _pairs,
        "the pairs served and refreshed, comma-separated `BASE-QUOTE`, until the pairs "
        "command (`python -m predictions.pairs`) changes the registry: from then on the "
        "registry wins",
    )
    registry_max_pairs: int = setting(
        1_000_000,
        _positive_int,
        "the most pairs the registry takes; an `add` or `load` past it is refused",
    )
    precompute: str = setting(
        "all",
        _precompute,
        "`all`: beat refreshes every known pair; `asked`: only the pairs clients asked "
        "for within their last three freshness lifetimes (the others are computed on "
        "their first request); `off` (or `0`): nothing, every pair is computed on "
        "request (`make run` then starts no worker and no beat)",
    )
    prediction_ttl_seconds: float = setting(
        60.0,
        _positive_float,
        "how long a prediction is fresh. The model reads 1-minute prices, so its answer "
        "cannot change more often than once a minute; a shorter TTL only makes requests "
        "wait for the model more often",
    )
    refresh_interval_seconds: float = setting(
        20.0,
        _positive_float,
        "how often beat refreshes every pair; must be shorter than the TTL (a third of "
        "it: two refreshes in a row can fail before a pair goes cold)",
    )
    prediction_horizon_seconds: int = setting(
        300, _positive_int, "how far ahead the model predicts"
    )
    simulated_model_latency_seconds: float = setting(
        1.0,
        _non_negative_float,
        "extra latency on every model call, to emulate a large model; `0` disables it",
    )
    model: str = setting(
        "predictions.model:LogLinearTrendModel",
        _import_string,
        "the model, as an import string: the version a fresh cache starts with (then "
        "`make rollout` changes it)",
    )
    market_data: str = setting(
        "synthetic",
        _market_data,
        "where the model's prices come from: `synthetic` (offline) or `ccxt:<exchange>` "
        "such as `ccxt:kraken` (live)",
    )
    market_data_timeout_seconds: float = setting(
        5.0,
        _positive_float,
        "how long one exchange request may take (live market data)",
    )
    compute_timeout_seconds: float = setting(
        10.0,
        _positive_float,
        "the longest a computation may hold a pair's lock, and so the longest a request "
        "waits for one; must exceed the model latency",
    )
    # Never past the prediction's expiry.
    near_cache_seconds: float = setting(
        0.25,
        _non_negative_float,
        "how long an API process answers from its own copy of a prediction it read from "
        "Redis (never past the prediction's `fresh_until`); below 1, `0` reads Redis on "
        "every request",
    )
    # While the subscription is healthy; else NEAR_CACHE_SECONDS.
    near_cache_follows_writes: bool = setting(
        True,
        _boolean,
        "API processes follow every prediction write (pub/sub channel `pc:updates`), so "
        "a copy kept current by that feed is served until its own `fresh_until` without "
        "a Redis round trip; `0`: every copy lives `NEAR_CACHE_SECONDS` "
        "([docs/serving.md](serving.md))",
    )
    # Each computation on a thread of its own, so a CPU-bound model never stalls the
    # event loop serving hits.
    max_concurrent_computes: int = setting(
        2,
        _positive_int,
        "model computations one API process runs at once, each on a real thread beside "
        "the event loop; further misses queue for one within `COMPUTE_TIMEOUT_SECONDS` "
        "(then 503 `overloaded`)",
    )
    stale_grace_seconds: float = setting(
        60.0,
        _non_negative_float,
        "how long past its `fresh_until` a prediction stays in Redis and may be served, "
        "marked stale, while it is recomputed or while that fails; stale answers' "
        "`Cache-Control` lets caches serve them for what is left of it",
    )
    # A read at t seconds before a prediction's freshness ends revalidates it early
    # with probability exp(-t / (compute_seconds * beta)).
    early_revalidation_beta: float = setting(
        1.0,
        _bounded(float, "a number >= 0", lambda value: value >= 0),
        "XFetch's beta: an API process revalidates a hot pair in the background before it "
        "goes stale, the earlier the larger; `0` turns early revalidation off "
        "(`EARLY_REFRESH_BETA`, its former name, is read too, with a warning, until 0.3.0)",
    )
    failed_compute_backoff_seconds: float = setting(
        1.0,
        _non_negative_float,
        "after a pair's computation fails, how long an API process waits before running "
        "the model for it again (meanwhile: stale within grace, else 503 "
        "`prediction_failed` at once)",
    )
    # So that a frozen Redis costs one timeout per interval, not one per request.
    circuit_failure_threshold: int = setting(
        3,
        _positive_int,
        "consecutive Redis failures after which an API process stops trying Redis...",
    )
    circuit_open_seconds: float = setting(
        1.0, _positive_float, "...for this long, then lets one request try again"
    )
    redis_socket_timeout_seconds: float = setting(
        0.3,
        _positive_float,
        "per Redis command; with one retry, a dead Redis costs a request well under a second",
    )
    redis_connect_timeout_seconds: float = setting(
        0.3, _positive_float, "per Redis connection attempt"
    )
    redis_max_connections: int = setting(
        32,
        _positive_int,
        "Redis connections per process (a thread waits for a free one rather than opening more)",
    )
    refresh_batch_size: int = setting(100, _positive_int, "most pairs in one refresh task")
    # About 0.7 KB a copy: 100,000 copies keep an API worker near 140 MiB (make bench).
    near_cache_max_pairs: int = setting(
        100_000,
        _positive_int,
        "the most pairs an API process keeps a near copy of (least recently used out "
        "first), about 0.7 KB each; past it, the others are read from Redis",
    )
    metrics_max_pair_series: int = setting(
        100,
        _non_negative_int,
        "`/metrics` exports per-pair age series for at most this many pairs (the oldest); "
        "counts by state cover every pair",
    )
    worker_concurrency: int = setting(
        4,
        _positive_int,
        "Celery pool processes per worker; refreshes are split into at least this many batches",
    )
    api_bind: str = setting(
        "127.0.0.1:8000", _bind, "where gunicorn listens (`--bind` overrides it)"
    )
    api_workers: int = setting(2, _positive_int, "gunicorn worker processes")
    # gevent: each connection is a greenlet, so slow or idle clients cost memory, about
    # 20 KB each, not threads.
    api_worker_connections: int = setting(
        2000,
        _bounded(int, "a whole number >= 10", lambda value: value >= 10),
        "connections one gunicorn (gevent) worker holds at once; at most 90% of them "
        "wait on misses, so hits always find room. Past it the worker stops accepting "
        "and the listen backlog holds new connections for another worker",
    )
    api_header_timeout_seconds: int = setting(
        5,
        _positive_int,
        "a client must send a whole request's headers within this long, and an idle "
        "keep-alive connection is closed after it: slow and silent clients are cut",
    )
    worker_metrics_bind: str = setting(
        "127.0.0.1:9808",
        _bind_or_off,
        "where the Celery worker serves its Prometheus metrics (`HOST:PORT`), or `off`",
    )
    log_level: str = setting(
        "INFO",
        _log_level,
        "the service's log level (`INFO` logs one line per request and per refresh)",
    )
    log_format: str = setting(
        "json",
        _choice(LOG_FORMATS),
        "`json`: one JSON object per line; `text`: plain lines for reading",
    )

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
        for field in dataclasses.fields(cls):
            name = field.name.upper()
            raw = env.get(name)
            old = RENAMED.get(name)
            if old is not None and env.get(old, "").strip():
                if (raw or "").strip():
                    warnings.warn(f"{old} is ignored: {name} is set", FutureWarning, stacklevel=2)
                else:
                    warnings.warn(
                        f"{old} is deprecated: set {name} instead (read until {RENAMED_UNTIL})",
                        FutureWarning,
                        stacklevel=2,
                    )
                    name, raw = old, env[old]  # a bad value names the variable that was set
            if raw is not None and raw.strip() != "":
                values[field.name] = field.metadata["coerce"](name, raw.strip())
        return cls(**values)  # type: ignore[arg-type]


def markdown_table() -> str:
    """The settings table of docs/operations.md: one row per setting, in order."""
    rows = [
        f"| `{field.name.upper()}` | {_shown_default(field)} | {field.metadata['doc']} |"
        for field in dataclasses.fields(Settings)
    ]
    return "\n".join(["| variable | default | meaning |", "| --- | --- | --- |", *rows])


def _shown_default(field: dataclasses.Field[object]) -> str:
    if field.metadata["shown"]:
        return str(field.metadata["shown"])
    value = field.default
    if value is None or value == ():
        return "unset"
    if isinstance(value, bool):
        text = "1" if value else "0"  # as the variable is written
    elif isinstance(value, float):
        text = f"{value:g}"
    elif isinstance(value, tuple):
        text = ",".join(str(item) for item in value)
    else:
        text = str(value)
    return f"`{text}`"


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


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--markdown", action="store_true", help="print the settings table of docs/operations.md"
    )
    if parser.parse_args().markdown:
        print(markdown_table())
    else:
        parser.print_help()
