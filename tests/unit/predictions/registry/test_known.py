from __future__ import annotations

import logging
import threading

import fakeredis
import pytest
import redis

from predictions.infra.keys import registry_key
from predictions.registry import Freshness, KnownPairs, PairRegistry
from tests.harness.processes import wait_for

PAIRS = ("ETH-EUR", "BTC-EUR")
DEFAULTS = Freshness(ttl_seconds=30, refresh_seconds=10)


def _warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.WARNING]


def _known(
    client: redis.Redis, pairs: tuple[str, ...] = PAIRS, reload_seconds: float = 3600
) -> KnownPairs:
    return KnownPairs(PairRegistry(client, max_pairs=100), pairs, DEFAULTS, reload_seconds)


def test_until_the_registry_is_read_the_view_is_pairs(
    redis_client: fakeredis.FakeRedis,
) -> None:
    known = _known(redis_client)
    assert known.pairs == frozenset(PAIRS) and "ETH-EUR" in known
    assert known.generation is None
    assert not known.reload_if_changed()  # nothing written yet: nothing to read
    assert redis_client.dbsize() == 0


def test_seed_mirrors_pairs_and_reads_the_registry(
    redis_client: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    known = _known(redis_client)
    known.seed()
    assert known.pairs == frozenset(PAIRS)
    assert known.generation == 1
    assert known.registry.read().entries == dict.fromkeys(PAIRS, "")
    assert "wins over PAIRS" not in caplog.text


def test_a_process_started_with_other_pairs_makes_them_the_registry_while_pairs_governs(
    redis_client: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    first = _known(redis_client)
    first.seed()
    second = _known(redis_client, ("SOL-EUR",))
    second.seed()
    assert second.pairs == frozenset({"SOL-EUR"})
    assert first.reload_if_changed()  # the first follows the registry, not its PAIRS
    assert first.pairs == frozenset({"SOL-EUR"})
    assert "wins over PAIRS" not in caplog.text


def test_once_the_command_changed_it_the_registry_wins_and_a_process_says_so(
    redis_client: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    _known(redis_client).seed()
    PairRegistry(redis_client, 100).add({"SOL-EUR": ""})
    known = _known(redis_client, ("ADA-EUR",))
    known.seed()
    assert known.pairs == frozenset({"ETH-EUR", "BTC-EUR", "SOL-EUR"})
    [warning] = _warnings(caplog)
    assert "wins over PAIRS" in warning.getMessage() and "holds 3 pairs" in warning.getMessage()


def test_no_warning_when_the_registry_the_command_changed_holds_what_pairs_says(
    redis_client: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    _known(redis_client).seed()
    PairRegistry(redis_client, 100).replace(dict.fromkeys(PAIRS, ""))
    known = _known(redis_client)
    known.seed()
    assert known.pairs == frozenset(PAIRS)
    assert _warnings(caplog) == []


def test_pairs_past_the_bound_are_not_written_and_the_process_still_starts(
    redis_client: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    known = KnownPairs(PairRegistry(redis_client, max_pairs=1), PAIRS, DEFAULTS)
    known.seed()
    assert known.pairs == frozenset(PAIRS)  # PAIRS, as before the registry
    assert redis_client.dbsize() == 0
    assert "REGISTRY_MAX_PAIRS" in caplog.text


class ReadOnlyRegistry(PairRegistry):
    """The registry as the API's Redis user sees it: readable, not writable."""

    def seed(self, pairs: object) -> bool:
        raise redis.ResponseError("NOPERM User api has no permissions to run the 'evalsha'")


def test_a_process_that_may_not_write_the_registry_only_reads_it(
    redis_client: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    PairRegistry(redis_client, 100).seed(["SOL-EUR"])  # beat or a worker seeded it
    known = KnownPairs(ReadOnlyRegistry(redis_client, 100), PAIRS, DEFAULTS)
    known.seed()
    assert known.pairs == frozenset({"SOL-EUR"})
    assert _warnings(caplog) == []


def test_a_redis_that_cannot_be_read_at_start_leaves_the_view_at_pairs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Unreachable(fakeredis.FakeRedis):
        def execute_command(self, *args: object, **options: object) -> object:
            raise redis.ConnectionError("Connection refused")

    known = _known(Unreachable())
    known.seed()
    assert known.pairs == frozenset(PAIRS)
    assert "serving PAIRS" in caplog.text


def test_the_view_moves_only_when_the_generation_does(redis_client: fakeredis.FakeRedis) -> None:
    known = _known(redis_client)
    known.seed()
    assert not known.reload_if_changed()
    registry = PairRegistry(redis_client, 100)
    registry.add({"SOL-EUR": "60:20"})
    assert known.reload_if_changed()
    assert known.pairs == frozenset({"ETH-EUR", "BTC-EUR", "SOL-EUR"})
    assert known.generation == 2
    assert not known.reload_if_changed()
    # A write behind the registry's back (no new generation) is not seen: by design,
    # a look costs one HGET.
    redis_client.hset(registry_key(), "ADA-EUR", "")
    assert not known.reload_if_changed()
    assert "ADA-EUR" not in known
    registry.remove(["ETH-EUR"])
    assert known.reload_if_changed()
    assert known.pairs == frozenset({"BTC-EUR", "SOL-EUR", "ADA-EUR"})


def test_each_pair_has_its_own_freshness_or_the_settings(
    redis_client: fakeredis.FakeRedis,
) -> None:
    known = _known(redis_client)
    known.seed()
    PairRegistry(redis_client, 100).add({"SOL-EUR": "60:20", "ADA-EUR": ":5", "XRP-EUR": "120:"})
    known.reload_if_changed()
    assert known.freshness("SOL-EUR") == Freshness(60, 20)
    assert known.freshness("ADA-EUR") == Freshness(30, 5)
    assert known.freshness("XRP-EUR") == Freshness(120, 10)
    assert known.freshness("ETH-EUR") == DEFAULTS
    assert [known.ttl_seconds(p) for p in ("SOL-EUR", "ADA-EUR", "XRP-EUR", "ETH-EUR")] == [
        60,
        30,
        120,
        30,
    ]
    assert known.by_refresh_interval() == {
        10: ["BTC-EUR", "ETH-EUR", "XRP-EUR"],
        20: ["SOL-EUR"],
        5: ["ADA-EUR"],
    }


def test_sorted_pairs_and_groups_follow_each_new_generation(
    redis_client: fakeredis.FakeRedis,
) -> None:
    known = _known(redis_client)
    known.seed()
    assert known.sorted_pairs() == ["BTC-EUR", "ETH-EUR"]
    assert known.by_refresh_interval() == {10: ["BTC-EUR", "ETH-EUR"]}
    PairRegistry(redis_client, 100).add({"ADA-EUR": ":5"})
    known.reload_if_changed()
    assert known.sorted_pairs() == ["ADA-EUR", "BTC-EUR", "ETH-EUR"]
    assert known.by_refresh_interval() == {5: ["ADA-EUR"], 10: ["BTC-EUR", "ETH-EUR"]}


def test_a_freshness_this_process_cannot_honour_falls_back_to_its_settings(
    redis_client: fakeredis.FakeRedis, caplog: pytest.LogCaptureFixture
) -> None:
    # Written by a process whose TTL was 60 s; this one's is 30 s, so a 40 s refresh
    # would not be within the TTL here.
    PairRegistry(redis_client, 100).add({"SOL-EUR": ":40", "ADA-EUR": "garbage"})
    known = _known(redis_client)
    known.reload_if_changed()
    assert "SOL-EUR" in known and "ADA-EUR" in known
    assert known.freshness("SOL-EUR") == DEFAULTS
    assert known.freshness("ADA-EUR") == DEFAULTS
    assert "pair SOL-EUR keeps the settings' freshness" in caplog.text
    assert "pair ADA-EUR keeps the settings' freshness" in caplog.text


def test_changed_wakes_the_watcher_long_before_its_next_look(
    redis_client: fakeredis.FakeRedis,
) -> None:
    known = _known(redis_client, reload_seconds=3600)
    known.seed()
    known.ensure_watching()
    thread = known._watcher.thread
    known.ensure_watching()
    assert known._watcher.thread is thread is not None and thread.daemon
    PairRegistry(redis_client, 100).add({"SOL-EUR": ""})
    # Without a word from the feed the watcher would look in an hour; told, at once.
    known.changed()
    wait_for(lambda: "SOL-EUR" in known, 5, what="the watcher to read the change")
    assert known.generation == 2


def test_the_watcher_keeps_the_last_view_while_redis_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = fakeredis.FakeRedis()
    known = _known(client, reload_seconds=0.01)
    known.seed()

    class Failing(PairRegistry):
        looks = threading.Semaphore(0)

        def generation(self) -> int | None:
            self.looks.release()
            raise redis.ConnectionError("down")

    working = known.registry
    known.registry = Failing(client, 100)
    known.ensure_watching()
    try:
        for _ in range(5):  # several failed looks
            assert Failing.looks.acquire(timeout=5)
        assert known.pairs == frozenset(PAIRS)
    finally:  # the thread never ends: leave it asleep
        known.reload_seconds = 3600
        known.registry = working
    # Once per outage, not once a look.
    assert caplog.text.count("cannot read the pair registry, will retry") == 1


def test_the_longest_ttl_is_any_known_pairs(redis_client: fakeredis.FakeRedis) -> None:
    known = _known(redis_client)
    known.seed()
    assert known.longest_ttl() == 30
    PairRegistry(redis_client, 100).add({"SOL-EUR": "600:", "ADA-EUR": "20:5"})
    known.reload_if_changed()
    assert known.longest_ttl() == 600
