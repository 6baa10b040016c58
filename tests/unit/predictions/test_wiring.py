"""wiring: one place builds a process's objects; make_redis bounds every client."""

from __future__ import annotations

import fakeredis
import redis
from redis.sentinel import SentinelManagedConnection, SentinelManagedSSLConnection

from predictions.cache import Limits, WriteFollower
from predictions.infra import RedisClock
from predictions.infra.keys import active_version_key
from predictions.settings import Settings
from predictions.wiring import BlockingSentinelConnectionPool, make_redis, wire
from tests.harness.doubles import HostClock

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


def test_one_wiring_shares_one_client_and_one_clock() -> None:
    client = fakeredis.FakeRedis()
    wiring = wire(Settings(stale_grace_seconds=7), role="test", redis_client=client)
    assert isinstance(wiring.clock, RedisClock) and wiring.clock.client is client
    assert wiring.store.redis is client and wiring.store.clock is wiring.clock
    assert wiring.store.grace_seconds == 7
    # Beat and the tools never compute: nothing of the model side is built for them.
    assert "predictor" not in vars(wiring)
    assert wiring.predictor.clock is wiring.clock
    assert wiring.known.pairs == frozenset(Settings().pairs)
    # A client of the caller's: the write feed is not followed unless asked for.
    assert not wiring.follow_writes


def test_the_cache_is_built_on_first_use_from_the_same_objects() -> None:
    clock = HostClock()
    wiring = wire(Settings(), role="test", redis_client=fakeredis.FakeRedis(), clock=clock)
    assert "cache" not in vars(wiring)  # the worker, which never asks, never holds one
    cache = wiring.cache
    assert cache is wiring.cache
    assert cache.store is wiring.store and cache.predictor is wiring.predictor
    assert cache.clock is clock and cache.near.clock is clock and cache.breaker.clock is clock
    assert cache.limits == Limits.from_settings(Settings())
    assert cache.feed is None


def test_following_writes_needs_a_near_cache() -> None:
    client = fakeredis.FakeRedis()
    following = wire(Settings(), role="test", redis_client=client, follow_writes=True)
    assert isinstance(following.cache.feed, WriteFollower)
    never = wire(
        Settings(near_cache_seconds=0), role="test", redis_client=client, follow_writes=True
    )
    assert never.cache.feed is None


def test_a_process_s_near_copies_are_bounded_and_follow_the_registry() -> None:
    client = fakeredis.FakeRedis()
    settings = Settings(
        near_cache_max_pairs=2,
        pairs=("ETH-EUR", "BTC-EUR", "ETH-USD"),
        simulated_model_latency_seconds=0,
    )
    wiring = wire(settings, role="test", redis_client=client, clock=HostClock(), follow_writes=True)
    cache = wiring.cache
    assert cache.near.max_pairs == 2
    assert wiring.predictor.ttl_of == wiring.known.ttl_seconds
    feed = cache.feed
    assert isinstance(feed, WriteFollower)
    assert feed.on_registry_change == wiring.known.changed
    # A new subscription fills the near copies with the known pairs' predictions, in
    # name order, as many as the near cache holds.
    wiring.known.seed()
    predictions = [wiring.predictor.compute(pair) for pair in settings.pairs]
    client.set(active_version_key(), predictions[0].model_version)
    assert wiring.store.write_many(predictions, wiring.clock.now()) == 3
    assert not any(cache.near.holds(pair) for pair in settings.pairs)
    assert feed.on_follow is not None
    feed.on_follow()
    assert [cache.near.holds(pair) for pair in ("BTC-EUR", "ETH-EUR", "ETH-USD")] == [
        True,
        True,
        False,
    ]
