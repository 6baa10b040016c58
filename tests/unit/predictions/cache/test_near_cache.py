from __future__ import annotations

import dataclasses
import threading

import fakeredis
import pytest

from predictions.cache import FEED_CHANNEL, near_cache
from predictions.cache.near_cache import NearCache, WriteFollower
from predictions.cache.store import (
    FeedMessage,
    delete_message,
    parse_feed_message,
    state_message,
    write_prefix,
)
from predictions.model.prediction import Prediction
from tests.harness.doubles import HostClock, make_prediction
from tests.harness.processes import wait_for

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


def _pair(name: str, **changes: object) -> Prediction:
    return dataclasses.replace(PREDICTION, pair=name, **changes)  # type: ignore[arg-type]


def test_past_max_pairs_the_least_recently_used_copy_goes_first() -> None:
    near = NearCache(0.5, Clocks(Clock(1_010.0), Clock(0.0)), max_pairs=3)
    near.observe(PREDICTION.model_version, flip_pending=False)
    for name in ("A-EUR", "B-EUR", "C-EUR"):
        near.put(_pair(name))
    assert near.get("A-EUR") is not None  # A used: B is now the least recently used
    near.put(_pair("D-EUR"))
    assert [near.holds(name) for name in ("A-EUR", "B-EUR", "C-EUR", "D-EUR")] == [
        True,
        False,
        True,
        True,
    ]
    near.put(_pair("E-EUR"))  # then C
    assert not near.holds("C-EUR")
    assert {name for name in ("A-EUR", "D-EUR", "E-EUR") if near.holds(name)} == {
        "A-EUR",
        "D-EUR",
        "E-EUR",
    }


def test_a_look_that_serves_nothing_still_counts_as_a_use() -> None:
    # get() on a copy too old to serve still marks it used: the next read puts it back.
    wall, mono = Clock(1_010.0), Clock(0.0)
    near = NearCache(0.5, Clocks(wall, mono), max_pairs=2)
    near.observe(PREDICTION.model_version, flip_pending=False)
    near.put(_pair("A-EUR"))
    near.put(_pair("B-EUR"))
    mono.now += 1.0  # both past max_age
    assert near.get("A-EUR") is None
    near.put(_pair("C-EUR"))
    assert near.holds("A-EUR") and not near.holds("B-EUR")


def test_replacing_a_copy_never_evicts_another() -> None:
    near = NearCache(0.5, Clocks(Clock(1_010.0), Clock(0.0)), max_pairs=2)
    near.observe(PREDICTION.model_version, flip_pending=False)
    near.put(_pair("A-EUR"))
    near.put(_pair("B-EUR"))
    near.put(_pair("A-EUR", computed_at=1_001.0))
    near.written(_pair("B-EUR", computed_at=1_002.0))
    assert near.holds("A-EUR") and near.holds("B-EUR")
    assert near.last_known("B-EUR").computed_at == 1_002.0  # type: ignore[union-attr]


def test_filling_only_takes_room_and_never_evicts_a_copy_requests_made() -> None:
    near = NearCache(0.5, Clocks(Clock(1_010.0), Clock(0.0)), max_pairs=2)
    near.put(_pair("A-EUR"))
    assert near.fill(_pair("B-EUR"))
    assert not near.fill(_pair("C-EUR"))  # full: nothing evicted for it
    assert near.fill(_pair("A-EUR", computed_at=1_001.0))  # held already: updated
    assert [near.holds(p) for p in ("A-EUR", "B-EUR", "C-EUR")] == [True, True, False]
    assert near.last_known("A-EUR").computed_at == 1_001.0  # type: ignore[union-attr]


def test_holds_says_whether_a_copy_is_kept_whatever_its_age() -> None:
    wall, mono = Clock(1_010.0), Clock(0.0)
    near = NearCache(0.5, Clocks(wall, mono))
    assert not near.holds("ETH-EUR")
    near.put(PREDICTION)
    wall.now = 2_000.0  # long past its freshness: not served, still held
    assert near.get("ETH-EUR") is None
    assert near.holds("ETH-EUR")
    near.forget("ETH-EUR")
    assert not near.holds("ETH-EUR")


def _write(prediction: Prediction, body: bytes | None = None) -> bytes:
    return write_prefix(prediction.pair, prediction.model_version) + (
        prediction.to_json() if body is None else body
    )


def test_the_feed_skips_writes_of_unheld_pairs_without_parsing_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    near, _ = _followed()
    follower = WriteFollower(fakeredis.FakeRedis(), near)
    parsed: list[bytes] = []

    def counting(data: bytes) -> FeedMessage:
        parsed.append(data)
        return parse_feed_message(data)

    monkeypatch.setattr(near_cache, "parse_feed_message", counting)
    follower._apply(_write(_pair("BTC-EUR"), body=b"{not json"))  # garbage, unheld
    follower._apply(_write(_pair("BTC-EUR")))
    follower._apply(b"w m-1 BTC-EUR")  # no body at all
    assert parsed == []
    assert not near.holds("BTC-EUR")
    # A held pair's write is parsed and applied; a garbage one is dropped.
    near.put(PREDICTION)
    follower._apply(_write(PREDICTION, body=b"{not json"))
    assert near.last_known("ETH-EUR") is PREDICTION
    newer = dataclasses.replace(PREDICTION, computed_at=1_005.0, fresh_until=1_065.0, body=b"")
    follower._apply(_write(newer))
    assert near.last_known("ETH-EUR") == newer
    assert len(parsed) == 2


def test_the_feed_forgets_deleted_pairs_and_applies_state_messages() -> None:
    near, mono = _followed()
    follower = WriteFollower(fakeredis.FakeRedis(), near)
    near.put(PREDICTION)
    mono.now += 1.0
    near.confirmed(mono.now)
    follower._apply(state_message("m-1", True))
    assert near.get("ETH-EUR") is None  # a flip is pending
    follower._apply(state_message("m-1", False))
    assert near.get("ETH-EUR") is PREDICTION
    follower._apply(delete_message("ETH-EUR", "m-1"))
    assert not near.holds("ETH-EUR")


def test_a_registry_message_tells_whoever_follows_the_registry() -> None:
    near, _ = _followed()
    told: list[str] = []
    WriteFollower(fakeredis.FakeRedis(), near, on_registry_change=lambda: told.append("r"))._apply(
        b"r 7"
    )
    assert told == ["r"]
    # Nobody to tell: ignored.
    WriteFollower(fakeredis.FakeRedis(), near)._apply(b"r 8")


def test_each_new_subscription_runs_on_follow_once_the_stream_is_followed() -> None:
    client = fakeredis.FakeRedis()
    near = NearCache(0.25, HostClock())
    seen: list[tuple[str, bool]] = []
    registry_changes = threading.Event()
    follower = WriteFollower(
        client,
        near,
        on_registry_change=registry_changes.set,
        on_follow=lambda: seen.append(("follow", near.following)),
        retry_seconds=0.05,
    )
    follower.ensure_running()
    try:
        wait_for(lambda: seen, 5, what="on_follow")
        assert seen == [("follow", True)]  # after the subscription and its state read
        client.publish(FEED_CHANNEL, b"r 2")
        assert registry_changes.wait(5)
    finally:
        follower.stop()
        assert follower._background.thread is not None
        follower._background.thread.join(5)
    assert not near.following
