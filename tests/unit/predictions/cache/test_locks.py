"""predictions/cache/locks.py: one holder per pair and version, absolute expiries, and a
release that never frees a lock someone else took since."""

from __future__ import annotations

import time

import fakeredis

from predictions.cache import locks
from predictions.infra.keys import compute_lock_key

V1 = "m-1"


def test_a_free_lock_is_taken_once(redis_client: fakeredis.FakeRedis) -> None:
    token = locks.acquire(redis_client, "ETH-EUR", V1, ttl_seconds=5, now=time.time())
    assert token is not None
    assert redis_client.get(compute_lock_key("ETH-EUR", V1)) == token
    assert locks.acquire(redis_client, "ETH-EUR", V1, ttl_seconds=5, now=time.time()) is None
    # The loser changed nothing: the holder's token is still the one stored.
    assert redis_client.get(compute_lock_key("ETH-EUR", V1)) == token


def test_tokens_are_unique_per_acquisition(redis_client: fakeredis.FakeRedis) -> None:
    first = locks.acquire(redis_client, "ETH-EUR", V1, ttl_seconds=5, now=time.time())
    assert first is not None
    locks.release(redis_client, "ETH-EUR", V1, first)
    second = locks.acquire(redis_client, "ETH-EUR", V1, ttl_seconds=5, now=time.time())
    assert second is not None and second != first


def test_locks_are_per_model_version(redis_client: fakeredis.FakeRedis) -> None:
    # A rollout computing m-2 never waits for a refresh of m-1.
    assert locks.acquire(redis_client, "ETH-EUR", V1, ttl_seconds=5, now=time.time()) is not None
    assert locks.acquire(redis_client, "ETH-EUR", "m-2", ttl_seconds=5, now=time.time()) is not None
    assert locks.acquire(redis_client, "BTC-EUR", V1, ttl_seconds=5, now=time.time()) is not None


def test_the_expiry_is_absolute_from_the_callers_now(redis_client: fakeredis.FakeRedis) -> None:
    key = compute_lock_key("ETH-EUR", V1)
    # "now" 100 s ahead of this host: the lock lives 100 s plus its TTL.
    locks.acquire(redis_client, "ETH-EUR", V1, ttl_seconds=2, now=time.time() + 100)
    assert 100_000 < redis_client.pttl(key) <= 102_000
    # A lock whose absolute expiry has passed (a SET that arrived late) holds nothing.
    locks.acquire(redis_client, "BTC-EUR", V1, ttl_seconds=2, now=time.time() - 10)
    assert not redis_client.exists(compute_lock_key("BTC-EUR", V1))
    assert locks.acquire(redis_client, "BTC-EUR", V1, ttl_seconds=2, now=time.time()) is not None


def test_acquire_many_takes_only_the_free_pairs(redis_client: fakeredis.FakeRedis) -> None:
    held = locks.acquire(redis_client, "BTC-EUR", V1, ttl_seconds=5, now=time.time())
    taken = locks.acquire_many(redis_client, ["ETH-EUR", "BTC-EUR", "ETH-USD"], V1, 5, time.time())
    assert set(taken) == {"ETH-EUR", "ETH-USD"}
    assert len(set(taken.values())) == 2
    for pair, token in taken.items():
        assert redis_client.get(compute_lock_key(pair, V1)) == token
    assert redis_client.get(compute_lock_key("BTC-EUR", V1)) == held
    assert locks.acquire_many(redis_client, [], V1, 5, time.time()) == {}


def test_release_frees_only_our_own_lock(redis_client: fakeredis.FakeRedis) -> None:
    key = compute_lock_key("ETH-EUR", V1)
    token = locks.acquire(redis_client, "ETH-EUR", V1, ttl_seconds=5, now=time.time())
    assert token is not None
    locks.release(redis_client, "ETH-EUR", V1, b"someone-else")
    assert redis_client.get(key) == token
    locks.release(redis_client, "ETH-EUR", V1, token)
    assert not redis_client.exists(key)


def test_release_many_leaves_a_lock_retaken_after_ours_expired(
    redis_client: fakeredis.FakeRedis,
) -> None:
    ours = locks.acquire_many(redis_client, ["ETH-EUR", "BTC-EUR"], V1, 5, time.time())
    redis_client.delete(compute_lock_key("BTC-EUR", V1))  # ours expired ...
    theirs = locks.acquire(
        redis_client, "BTC-EUR", V1, ttl_seconds=5, now=time.time()
    )  # ... and retaken
    assert theirs is not None
    locks.release_many(redis_client, ours, V1)
    assert not redis_client.exists(compute_lock_key("ETH-EUR", V1))
    assert redis_client.get(compute_lock_key("BTC-EUR", V1)) == theirs
    locks.release_many(redis_client, {}, V1)  # nothing to release: no error
