from __future__ import annotations

from typing import Any, cast

import fakeredis
import pytest
import redis

from predictions.infra.keys import asked_pairs_key
from predictions.registry import (
    ASKED_LIFETIMES,
    AskedPairs,
    Freshness,
    KnownPairs,
    OwnFreshness,
    PairRegistry,
    recently_asked,
)
from predictions.registry import asked as asked_module
from tests.harness.doubles import ManualClock
from tests.harness.processes import wait_for


def _known(client: redis.Redis, ttls: dict[str, float]) -> KnownPairs:
    """Known pairs with the given TTLs of their own (refreshed every quarter of it)."""
    PairRegistry(client, 100).replace(
        {pair: OwnFreshness(ttl, ttl / 4).encode() for pair, ttl in ttls.items()}
    )
    known = KnownPairs(PairRegistry(client, 100), [], Freshness(10.0, 5.0))
    assert known.reload_if_changed()
    return known


def _scores(client: redis.Redis) -> dict[str, float]:
    found = cast(
        list[tuple[bytes, float]], client.zrange(asked_pairs_key(), 0, -1, withscores=True)
    )
    return {pair.decode(): score for pair, score in found}


def test_asking_writes_nothing_until_a_flush_sends_each_pair_once(
    redis_client: fakeredis.FakeRedis,
) -> None:
    clock = ManualClock(now=1_000.0)
    asked = AskedPairs(redis_client, clock.now, flush_seconds=3600)
    for pair in ("ETH-EUR", "BTC-EUR", "ETH-EUR", "ETH-EUR"):
        asked.record(pair)
    assert redis_client.dbsize() == 0
    assert asked.flush() == 2
    assert _scores(redis_client) == {"ETH-EUR": 1_000.0, "BTC-EUR": 1_000.0}
    assert asked.flush() == 0  # nothing asked since
    clock.advance(5)
    asked.record("BTC-EUR")
    assert asked.flush() == 1
    assert _scores(redis_client) == {"ETH-EUR": 1_000.0, "BTC-EUR": 1_005.0}


def test_many_pairs_go_in_several_small_commands(
    redis_client: fakeredis.FakeRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(asked_module, "_CHUNK", 3)
    asked = AskedPairs(redis_client, lambda: 1.0, flush_seconds=3600)
    for i in range(10):
        asked.record(f"P{i}-EUR")
    assert asked.flush() == 10
    assert _scores(redis_client) == {f"P{i}-EUR": 1.0 for i in range(10)}


def test_a_failed_flush_keeps_the_pairs_for_the_next(redis_client: fakeredis.FakeRedis) -> None:
    class Down(fakeredis.FakeRedis):
        def pipeline(self, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
            pipe = super().pipeline(*args, **kwargs)

            def fail(raise_on_error: bool = True) -> list[Any]:
                raise redis.ConnectionError("down")

            pipe.execute = fail  # type: ignore[method-assign]
            return pipe

    asked = AskedPairs(Down(), lambda: 7.0, flush_seconds=3600)
    asked.record("ETH-EUR")
    with pytest.raises(redis.ConnectionError):
        asked.flush()
    asked.record("BTC-EUR")
    asked.redis = redis_client  # back up
    assert asked.flush() == 2
    assert _scores(redis_client) == {"ETH-EUR": 7.0, "BTC-EUR": 7.0}


def test_a_background_flusher_sends_what_was_asked(redis_client: fakeredis.FakeRedis) -> None:
    asked = AskedPairs(redis_client, lambda: 1.0, flush_seconds=0.01)
    asked.record("ETH-EUR")
    assert asked._flusher.thread is None  # recording alone starts nothing
    asked.ensure_flushing()
    thread = asked._flusher.thread
    asked.ensure_flushing()
    assert asked._flusher.thread is thread is not None and thread.daemon
    asked.record("BTC-EUR")
    wait_for(lambda: len(_scores(redis_client)) == 2, 5, what="the flush")
    asked.flush_seconds = 3600  # the thread never ends: leave it asleep


def test_recently_asked_keeps_pairs_asked_within_their_own_lifetimes(
    redis_client: fakeredis.FakeRedis,
) -> None:
    known = _known(redis_client, {"ETH-EUR": 10, "BTC-EUR": 100, "SOL-EUR": 10, "ADA-EUR": 10})
    now = 10_000.0
    redis_client.zadd(
        asked_pairs_key(),
        {
            "ETH-EUR": now - 10 * ASKED_LIFETIMES,  # just within: 30 s ago
            "BTC-EUR": now - 250,  # long ago, but its TTL is long
            "SOL-EUR": now - 10 * ASKED_LIFETIMES - 0.5,  # just past its window
        },
    )
    candidates = ["SOL-EUR", "BTC-EUR", "ADA-EUR", "ETH-EUR"]
    # In the candidates' order; ADA-EUR was never asked.
    assert recently_asked(redis_client, now, candidates, known) == ["BTC-EUR", "ETH-EUR"]
    assert recently_asked(redis_client, now, [], known) == []


def test_entries_older_than_any_window_are_dropped(redis_client: fakeredis.FakeRedis) -> None:
    known = _known(redis_client, {"ETH-EUR": 10, "BTC-EUR": 10})
    now = 10_000.0
    redis_client.zadd(asked_pairs_key(), {"ETH-EUR": now - 31, "BTC-EUR": now - 29})
    assert recently_asked(redis_client, now, ["ETH-EUR", "BTC-EUR"], known) == ["BTC-EUR"]
    assert _scores(redis_client) == {"BTC-EUR": now - 29}


def test_a_refresh_of_short_lived_pairs_keeps_long_lived_pairs_asked(
    redis_client: fakeredis.FakeRedis,
) -> None:
    # Two refresh intervals, two refresh_all tasks, each asking about its own pairs.
    known = _known(redis_client, {"ETH-EUR": 10, "BTC-EUR": 1_000})
    now = 10_000.0
    redis_client.zadd(asked_pairs_key(), {"ETH-EUR": now - 1, "BTC-EUR": now - 600})
    assert recently_asked(redis_client, now, ["ETH-EUR"], known) == ["ETH-EUR"]
    # BTC-EUR was asked 600 s ago, well within its 3,000 s: still kept warm.
    assert recently_asked(redis_client, now, ["BTC-EUR"], known) == ["BTC-EUR"]
