"""make_redis: explicit bounds on every client, direct or through Sentinel."""

from __future__ import annotations

import redis
from redis.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection

from predictions.settings import Settings
from predictions.wiring import BlockingSentinelConnectionPool, make_redis

SENTINELS = {"REDIS_SENTINELS": "s1:26379,s2:26379", "REDIS_SENTINEL_MASTER": "cache"}


def test_a_direct_client_is_bounded() -> None:
    client = make_redis(Settings(), client_name="test")
    pool = client.connection_pool
    assert isinstance(pool, redis.BlockingConnectionPool)
    assert pool.connection_kwargs["socket_timeout"] == Settings().redis_socket_timeout_seconds


def test_through_sentinels_redis_url_gives_database_user_password_and_tls() -> None:
    settings = Settings.from_env({"REDIS_URL": "rediss://app:s3cret@ignored:6380/4", **SENTINELS})
    client = make_redis(settings, client_name="test")
    pool = client.connection_pool
    assert isinstance(pool, BlockingSentinelConnectionPool)
    assert isinstance(pool, redis.BlockingConnectionPool)  # bounded, waits for a connection
    assert pool.service_name == "cache"
    assert pool.connection_class is SentinelManagedSSLConnection
    kwargs = pool.connection_kwargs
    assert (kwargs["db"], kwargs["username"], kwargs["password"]) == (4, "app", "s3cret")
    assert "host" not in kwargs and "port" not in kwargs  # the sentinels say where
    assert kwargs["socket_timeout"] == settings.redis_socket_timeout_seconds
    assert kwargs["socket_connect_timeout"] == settings.redis_connect_timeout_seconds
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [26379, 26379]
    for sentinel in sentinels:
        options = sentinel.connection_pool.connection_kwargs
        assert options["socket_timeout"] == settings.redis_socket_timeout_seconds


def test_through_sentinels_without_tls() -> None:
    settings = Settings.from_env({"REDIS_URL": "redis://ignored/2", **SENTINELS})
    pool = make_redis(settings, client_name="test").connection_pool
    assert pool.connection_class is SentinelManagedConnection
    assert pool.max_connections == settings.redis_max_connections


def test_an_explicit_url_is_reached_directly_even_with_sentinels() -> None:
    settings = Settings.from_env(SENTINELS)
    pool = make_redis(settings, "redis://other:6379/1", client_name="test").connection_pool
    assert not isinstance(pool, BlockingSentinelConnectionPool)
    assert pool.connection_kwargs["host"] == "other"
