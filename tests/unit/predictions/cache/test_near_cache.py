from __future__ import annotations

import dataclasses

from predictions.cache.near_cache import NearCache
from tests.harness.doubles import make_prediction

PREDICTION = make_prediction(computed_at=1_000.0, fresh_until=1_060.0)


class Clock:
    """One of a test's two clocks, wall and monotonic, moved by hand (``.now``)."""

    def __init__(self, now: float) -> None:
        self.now = now


class Clocks:
    """A Clock (predictions.infra.Clock) made of a wall clock and a monotonic one."""

    def __init__(self, wall: Clock, mono: Clock) -> None:
        self.wall, self.mono = wall, mono

    def now(self) -> float:
        return self.wall.now

    def monotonic(self) -> float:
        return self.mono.now


def test_an_entry_lives_at_most_max_age() -> None:
    wall, mono = Clock(1_010.0), Clock(50.0)
    near = NearCache(0.25, Clocks(wall, mono))
    near.observe(PREDICTION.model_version, flip_pending=False)
    near.put(PREDICTION)
    assert near.get("ETH-EUR") is PREDICTION
    mono.now += 0.24
    assert near.get("ETH-EUR") is PREDICTION
    mono.now += 0.02
    assert near.get("ETH-EUR") is None


def test_an_entry_never_outlives_its_prediction() -> None:
    wall, mono = Clock(1_059.9), Clock(50.0)
    near = NearCache(0.5, Clocks(wall, mono))
    near.observe(PREDICTION.model_version, flip_pending=False)
    near.put(PREDICTION)
    assert near.get("ETH-EUR") is PREDICTION
    wall.now = 1_060.0
    assert near.get("ETH-EUR") is None


def test_a_newer_put_replaces_and_pairs_are_separate() -> None:
    near = NearCache(0.5, Clocks(Clock(1_010.0), Clock(0.0)))
    near.observe(PREDICTION.model_version, flip_pending=False)
    newer = dataclasses.replace(PREDICTION, computed_at=1_005.0, fresh_until=1_065.0)
    near.put(PREDICTION)
    near.put(newer)
    assert near.get("ETH-EUR") is newer
    assert near.get("BTC-EUR") is None


def test_zero_max_age_disables_it() -> None:
    near = NearCache(0, Clocks(Clock(1_010.0), Clock(0.0)))
    near.observe(PREDICTION.model_version, flip_pending=False)
    near.put(PREDICTION)
    assert near.get("ETH-EUR") is None


def test_only_the_active_versions_copies_are_served_and_none_while_a_flip_is_pending() -> None:
    near = NearCache(0.5, Clocks(Clock(1_010.0), Clock(0.0)))
    near.observe("m-1", flip_pending=False)
    near.put(PREDICTION)
    assert near.get("ETH-EUR") is PREDICTION
    near.observe("m-1", flip_pending=True)  # a rollout is about to flip
    assert near.get("ETH-EUR") is None
    near.observe("m-2", flip_pending=False)  # flipped: m-1's copy is never served again
    assert near.get("ETH-EUR") is None
    newer_version = dataclasses.replace(PREDICTION, model_version="m-2")
    near.put(newer_version)
    assert near.get("ETH-EUR") is newer_version
    # An older computation of the new version replaces a copy of the old version.
    assert near.last_known("ETH-EUR") is newer_version


def _followed(max_age: float = 0.25) -> tuple[NearCache, Clock]:
    mono = Clock(50.0)
    near = NearCache(max_age, Clocks(Clock(1_010.0), mono))
    near.observe("m-1", flip_pending=False)
    near.follow("m-1", flip_pending=False)
    return near, mono


def test_a_followed_copy_lives_while_the_stream_is_confirmed() -> None:
    near, mono = _followed()
    near.put(PREDICTION)
    for _ in range(20):  # 10 s, far past max_age: each step the stream is confirmed
        mono.now += 0.5
        near.confirmed(mono.now - 0.1)
        assert near.get("ETH-EUR") is PREDICTION
    mono.now += 0.3  # no confirmation for longer than max_age: not served
    assert near.get("ETH-EUR") is None


def test_a_followed_copy_is_not_served_while_a_flip_is_pending_or_of_another_version() -> None:
    near, mono = _followed()
    near.put(PREDICTION)
    mono.now += 1.0
    near.confirmed(mono.now)
    assert near.get("ETH-EUR") is PREDICTION
    near.followed_state("m-1", flip_pending=True)
    assert near.get("ETH-EUR") is None
    near.followed_state("m-2", flip_pending=False)
    assert near.get("ETH-EUR") is None


def test_a_copy_from_before_the_subscription_is_followed_only_once_written() -> None:
    mono = Clock(50.0)
    near = NearCache(0.25, Clocks(Clock(1_010.0), mono))
    near.observe("m-1", flip_pending=False)
    near.put(PREDICTION)
    near.follow("m-1", flip_pending=False)  # a write before this may have been missed
    mono.now += 1.0
    near.confirmed(mono.now)
    assert near.get("ETH-EUR") is None
    newer = dataclasses.replace(PREDICTION, computed_at=1_005.0, fresh_until=1_065.0)
    near.written(newer)
    assert near.get("ETH-EUR") is newer


def test_writes_update_held_copies_only_and_never_go_back_in_time() -> None:
    near, mono = _followed()
    near.written(PREDICTION)  # not held here: not kept
    assert near.last_known("ETH-EUR") is None
    newer = dataclasses.replace(PREDICTION, computed_at=1_005.0, fresh_until=1_065.0)
    near.put(newer)
    near.written(PREDICTION)  # an older write arriving late
    assert near.last_known("ETH-EUR") is newer


def test_a_lost_subscription_leaves_copies_to_their_own_max_age() -> None:
    near, mono = _followed()
    near.put(PREDICTION)
    near.confirmed(mono.now)
    near.unfollow()
    mono.now += 0.2
    assert near.get("ETH-EUR") is PREDICTION  # read 0.2 s ago: still within max_age
    mono.now += 0.1
    assert near.get("ETH-EUR") is None


def test_a_forgotten_pair_is_gone() -> None:
    near, _ = _followed()
    near.put(PREDICTION)
    near.forget("ETH-EUR")
    assert near.last_known("ETH-EUR") is None
