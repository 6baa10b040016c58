"""make_redis: every Redis client of the service, with explicit timeouts.

redis-py's defaults have changed between major versions (no socket timeout at all in
7.x, 5 s plus retries in 8.x), and either can hold a request for a long time on a
frozen server. Every limit is therefore set here, from Settings.

With REDIS_SENTINELS set, the cache's client asks the sentinels for the master's
address whenever it opens a connection (redis-py's Sentinel), so after a failover the
next connection reaches the new master; REDIS_URL still gives the database, the user,
the password and TLS.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.connection import SSLConnection, parse_url
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool

from predictions.settings import Settings


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
