"""Wiring: the shared objects of one process, built from Settings in one place.

``wire`` is what the API (api.create_app), the worker and beat (worker/), a rollout and
the tools call: a Redis client, this process's clock (Redis's time), the predictor with
its model catalog and market data, the store, and, for the API, the read-through cache
with its near copies (built on first use, so the worker never holds one).

Every Redis client of the service comes from ``make_redis``, with explicit timeouts.
redis-py's defaults have changed between major versions (no socket timeout at all in
7.x, 5 s plus retries in 8.x), and either can hold a request for a long time on a
frozen server. Every limit is therefore set here, from Settings.

With REDIS_SENTINELS set, the cache's client asks the sentinels for the master's
address whenever it opens a connection (redis-py's Sentinel), so after a failover the
next connection reaches the new master; REDIS_URL still gives the database, the user,
the password and TLS.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.connection import SSLConnection, parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from predictions.cache import (
    CircuitBreaker,
    Limits,
    NearCache,
    PredictionCache,
    PredictionStore,
    WriteFollower,
)
from predictions.infra import Clock, metrics, process_clock
from predictions.model import ModelCatalog, Offload, Predictor, build_market_data, run_here
from predictions.registry import (
    AskedPairs,
    Freshness,
    KnownPairs,
    PairRegistry,
    most_recently_asked,
)
from predictions.settings import Settings

log = logging.getLogger(__name__)


class BlockingSentinelConnectionPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """Sentinel's pool, bounded as the direct one is: a thread waits (up to the socket
    timeout) for a free connection instead of failing at once. redis-py ships the
    Sentinel pool only unbounded-or-failing; the two classes compose, as the Sentinel
    pool only decides where a connection goes and the blocking one how many exist."""


def make_redis(settings: Settings, url: str | None = None, *, client_name: str) -> redis.Redis:
    """A client for ``url`` (default: the prediction cache) that never blocks for long.

    One retry with a short backoff rides over a dropped connection (a Redis restart,
    an idle connection closed by a proxy); more retries, or retried timeouts, would only
    multiply the time a caller waits on a dead or frozen server.
    """
    options: dict[str, Any] = {
        # Bounded: a thread waits up to the socket timeout for a free connection
        # instead of the process opening connections without limit.
        "max_connections": settings.redis_max_connections,
        "timeout": settings.redis_socket_timeout_seconds,
        "socket_timeout": settings.redis_socket_timeout_seconds,
        "socket_connect_timeout": settings.redis_connect_timeout_seconds,
        "socket_keepalive": True,
        # Ping a connection that sat idle this long before reusing it.
        "health_check_interval": 15,
        # Retry a dropped connection once, never a timeout: a Redis that did not answer
        # in time will not answer a second time either, and each retry (with its
        # reconnect and CLIENT SETNAME) would add another socket timeout to the wait.
        "retry": Retry(
            ExponentialBackoff(cap=0.05, base=0.01),
            retries=1,
            supported_errors=(redis.ConnectionError,),
        ),
        "client_name": client_name,
    }
    if url is None and settings.redis_sentinels:
        return _master_through_sentinels(settings, options)
    pool = redis.BlockingConnectionPool.from_url(url or settings.redis_url, **options)
    return redis.Redis(connection_pool=pool)


def _master_through_sentinels(settings: Settings, options: dict[str, Any]) -> redis.Redis:
    from_url = parse_url(settings.redis_url)  # type: ignore[no-untyped-call]
    # The sentinels say where the master is: REDIS_URL's host and port are not used.
    from_url.pop("host", None)
    from_url.pop("port", None)
    if from_url.pop("connection_class", None) is SSLConnection:
        from_url["ssl"] = True  # the Sentinel pool picks its own TLS connection class
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(settings.redis_sentinels),
        # The sentinels themselves, asked on every new connection: the same bounds.
        sentinel_kwargs={
            "socket_timeout": settings.redis_socket_timeout_seconds,
            "socket_connect_timeout": settings.redis_connect_timeout_seconds,
            "client_name": options["client_name"],
        },
    )
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        settings.redis_sentinel_master,
        connection_pool_class=BlockingSentinelConnectionPool,
        **from_url,
        **options,
    )
    return client


@dataclasses.dataclass(frozen=True)
class Wiring:
    """One process's shared objects (see ``wire``)."""

    settings: Settings
    redis: redis.Redis
    clock: Clock
    store: PredictionStore
    # A predictor handed over (tests); else built from the settings on first use, so
    # that beat and the tools, which never compute, never load market data (ccxt).
    given_predictor: Predictor | None = None
    # For the cache only: how it runs the model, and whether it follows the write feed.
    offload: Offload[object] = run_here
    follow_writes: bool = False

    @functools.cached_property
    def registry(self) -> PairRegistry:
        return PairRegistry(self.redis, self.settings.registry_max_pairs)

    @functools.cached_property
    def known(self) -> KnownPairs:
        """This process's view of the known pairs: PAIRS until the registry is read
        (``known.seed()`` at start, then the watcher or ``reload_if_changed``)."""
        settings = self.settings
        return KnownPairs(
            self.registry,
            settings.pairs,
            Freshness(settings.prediction_ttl_seconds, settings.refresh_interval_seconds),
        )

    @functools.cached_property
    def asked(self) -> AskedPairs:
        """The pairs this (API) process is asked for, sent to Redis once a second."""
        return AskedPairs(self.redis, self.clock.now)

    @functools.cached_property
    def predictor(self) -> Predictor:
        """The predictor, with a catalog that builds MODEL on first need."""
        if self.given_predictor is not None:
            return self.given_predictor
        settings = self.settings
        return Predictor(
            models=ModelCatalog(settings.model),
            market_data=build_market_data(
                settings.market_data, settings.market_data_timeout_seconds, self.clock
            ),
            horizon_seconds=settings.prediction_horizon_seconds,
            ttl_seconds=settings.prediction_ttl_seconds,
            simulated_latency_seconds=settings.simulated_model_latency_seconds,
            clock=self.clock,
            ttl_of=self.known.ttl_seconds,
        )

    @functools.cached_property
    def cache(self) -> PredictionCache:
        """The API's read-through cache, with this process's near copies."""
        settings = self.settings
        near = NearCache(settings.near_cache_seconds, self.clock, settings.near_cache_max_pairs)
        feed = None
        if self.follow_writes and settings.near_cache_seconds > 0:
            feed = WriteFollower(
                self.redis,
                near,
                on_registry_change=self.known.changed,
                on_follow=lambda: self._warm(cache),
            )
        limits = Limits.from_settings(settings)
        breaker = CircuitBreaker(
            limits.circuit_failure_threshold,
            limits.circuit_open_seconds,
            self.clock,
            on_change=lambda opened: metrics.CIRCUIT_OPEN.set(int(opened)),
        )
        cache = PredictionCache(
            self.store,
            self.predictor,
            limits,
            self.clock,
            near_cache=near,
            breaker=breaker,
            offload=self.offload,
            feed=feed,
        )
        return cache

    def _warm(self, cache: PredictionCache) -> None:
        """Fill a new subscription's near copies with the known pairs' predictions:
        all of them if they fit, else the most recently asked."""
        known, room = self.known, self.settings.near_cache_max_pairs
        if len(known.pairs) <= room:
            pairs = known.sorted_pairs()
        else:
            asked = most_recently_asked(self.redis, room, known)
            pairs = list(dict.fromkeys(itertools.chain(asked, known.sorted_pairs())))
        copied = cache.warm(pairs)
        log.info("near copies filled pairs=%d", copied, extra={"pairs": copied})


def wire(
    settings: Settings,
    *,
    role: str,
    redis_client: redis.Redis | None = None,
    clock: Clock | None = None,
    predictor: Predictor | None = None,
    offload: Offload[object] = run_here,
    follow_writes: bool | None = None,
) -> Wiring:
    """Build a process's objects from ``settings``; tests pass their own client, clock
    or predictor. ``role`` names the process to Redis (CLIENT LIST).

    The clock is Redis's, as this process measures it. The predictor is built on first
    use, and its model on first need (the API asks at start, the worker in the
    background). ``follow_writes`` defaults to NEAR_CACHE_FOLLOWS_WRITES when the client
    is made here, and to off for a client of the caller's.
    """
    client = redis_client or make_redis(settings, client_name=f"prediction-cache-{role}")
    if clock is None:
        clock = process_clock(client)
    if follow_writes is None:
        follow_writes = redis_client is None and settings.near_cache_follows_writes
    return Wiring(
        settings=settings,
        redis=client,
        clock=clock,
        store=PredictionStore(client, clock, grace_seconds=settings.stale_grace_seconds),
        given_predictor=predictor,
        offload=offload,
        follow_writes=follow_writes,
    )
