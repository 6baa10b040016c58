"""The write feed against a real redis-server: writes, deletes and state changes reach a
following near cache in order, and a lost subscription ends following until it is back."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import pytest
import redis

from predictions.cache import FEED_CHANNEL, WriteFollower, state_message
from predictions.cache.near_cache import NearCache
from predictions.cache.store import PredictionStore
from predictions.infra.keys import active_version_key, flip_pending_key
from predictions.model.prediction import Prediction
from tests.harness.doubles import HostClock, make_prediction
from tests.harness.processes import RedisServer, wait_for

pytestmark = pytest.mark.integration

PAIRS = frozenset({"ETH-EUR", "BTC-EUR"})


@pytest.fixture
def client(redis_server: RedisServer) -> redis.Redis:
    client = redis.Redis(port=redis_server.port, socket_timeout=0.5, socket_connect_timeout=0.5)
    client.set(active_version_key(), "m-1")
    return client


@pytest.fixture
def followed(client: redis.Redis) -> Iterator[tuple[NearCache, WriteFollower]]:
    near = NearCache(0.25, clock=HostClock())  # the real clocks: predictions made fresh from now
    follower = WriteFollower(client, near, recheck_seconds=0.3, retry_seconds=0.1)
    follower.ensure_running()
    wait_for(lambda: near.following, 5, what="the subscription")
    yield near, follower
    follower.stop()


def fresh(**changes: object) -> Prediction:
    now = time.time()
    return make_prediction(computed_at=round(now, 3), fresh_until=round(now + 60, 3), **changes)


def test_a_write_updates_a_held_copy_which_then_outlives_max_age(
    client: redis.Redis, followed: tuple[NearCache, WriteFollower]
) -> None:
    near, _ = followed
    store = PredictionStore(client, grace_seconds=10, clock=HostClock())
    first = fresh()
    near.observe("m-1", False)
    near.put(first)
    newer = dataclasses.replace(first, computed_at=first.computed_at + 1)
    assert store.write(newer, time.time())
    wait_for(lambda: near.last_known("ETH-EUR") == newer, 2, what="the write delivered")
    time.sleep(0.6)  # past max_age: served because the stream keeps confirming it
    assert near.get("ETH-EUR") == newer


def test_a_pending_flip_and_a_delete_stop_serving_at_once(
    client: redis.Redis, followed: tuple[NearCache, WriteFollower]
) -> None:
    near, _ = followed
    store = PredictionStore(client, grace_seconds=10, clock=HostClock())
    prediction = fresh()
    near.put(prediction)
    newer = dataclasses.replace(prediction, computed_at=prediction.computed_at + 1)
    store.write(newer, time.time())
    wait_for(lambda: near.last_known("ETH-EUR") == newer, 2, what="the write delivered")
    time.sleep(0.3)
    assert near.get("ETH-EUR") == newer  # followed, past its own max_age
    with client.pipeline(transaction=True) as pipe:  # what a rollout does
        pipe.set(flip_pending_key(), "m-2")
        pipe.publish(FEED_CHANNEL, state_message("m-1", True))
        pipe.execute()
    wait_for(lambda: near.get("ETH-EUR") is None, 1, what="pending flip seen")
    client.delete(flip_pending_key())
    client.publish(FEED_CHANNEL, state_message("m-1", False))
    wait_for(lambda: near.get("ETH-EUR") is not None, 1, what="flip abandoned")
    assert store.forget("ETH-EUR", "m-1")
    wait_for(lambda: near.last_known("ETH-EUR") is None, 1, what="the delete delivered")


def test_keys_flushed_by_hand_are_noticed_by_the_recheck(
    client: redis.Redis, followed: tuple[NearCache, WriteFollower]
) -> None:
    near, _ = followed
    store = PredictionStore(client, grace_seconds=10, clock=HostClock())
    prediction = fresh()
    near.put(prediction)
    store.write(
        dataclasses.replace(prediction, computed_at=prediction.computed_at + 1), time.time()
    )
    wait_for(lambda: near.get("ETH-EUR") is not None, 1)
    client.flushall()  # no message: the active version is simply gone
    time.sleep(0.3)  # past the copy's own max_age
    wait_for(lambda: near.get("ETH-EUR") is None, 1.5, what="the recheck saw no version")


def test_a_lost_subscription_ends_following_and_a_new_one_resumes(
    redis_server: RedisServer, client: redis.Redis, followed: tuple[NearCache, WriteFollower]
) -> None:
    near, _ = followed
    redis_server.kill()
    wait_for(lambda: not near.following, 5, what="following ended")
    redis_server.start()
    client.set(active_version_key(), "m-1")
    wait_for(lambda: near.following, 10, what="following resumed")
