"""make_redis: every Redis client of the service, with explicit timeouts.

redis-py's defaults have changed between major versions (no socket timeout at all in
7.x, 5 s plus retries in 8.x), and either can hold a request for a long time on a
frozen server. Every limit is therefore set here, from Settings.
"""

from __future__ import annotations

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from predictions.settings import Settings


def make_redis(settings: Settings, url: str | None = None, *, client_name: str) -> redis.Redis:
    """A client for ``url`` (default: the prediction cache) that never blocks for long.

    One retry with a short backoff rides over a dropped connection (a Redis restart,
    an idle connection closed by a proxy); more retries, or retried timeouts, would only
    multiply the time a caller waits on a dead or frozen server.
    """
    pool = redis.BlockingConnectionPool.from_url(
        url or settings.redis_url,
        # Bounded: a thread waits up to the socket timeout for a free connection
        # instead of the process opening connections without limit.
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_socket_timeout_seconds,
        socket_timeout=settings.redis_socket_timeout_seconds,
        socket_connect_timeout=settings.redis_connect_timeout_seconds,
        socket_keepalive=True,
        # Ping a connection that sat idle this long before reusing it.
        health_check_interval=15,
        # Retry a dropped connection once, never a timeout: a Redis that did not answer
        # in time will not answer a second time either, and each retry (with its
        # reconnect and CLIENT SETNAME) would add another socket timeout to the wait.
        retry=Retry(
            ExponentialBackoff(cap=0.05, base=0.01),
            retries=1,
            supported_errors=(redis.ConnectionError,),
        ),
        client_name=client_name,
    )
    return redis.Redis(connection_pool=pool)
