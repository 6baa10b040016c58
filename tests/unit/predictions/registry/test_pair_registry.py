from __future__ import annotations

from collections.abc import Iterator

import fakeredis
import pytest

from predictions.cache import FEED_CHANNEL
from predictions.infra.keys import registry_key, registry_state_key
from predictions.registry import (
    SOURCE_COMMAND,
    SOURCE_SETTING,
    PairRegistry,
    RegistryRefused,
    Snapshot,
)

PAIRS = ("ETH-EUR", "BTC-EUR")


@pytest.fixture
def registry(redis_client: fakeredis.FakeRedis) -> PairRegistry:
    return PairRegistry(redis_client, max_pairs=5)


class Feed:
    """The write feed's messages, as a process following it sees them."""

    def __init__(self, client: fakeredis.FakeRedis) -> None:
        self.pubsub = client.pubsub()  # type: ignore[no-untyped-call]
        self.pubsub.subscribe(FEED_CHANNEL)
        assert self.pubsub.get_message(timeout=1)["type"] == "subscribe"
        self.seen: list[bytes] = []

    def messages(self) -> list[bytes]:
        while (message := self.pubsub.get_message(timeout=0.05)) is not None:
            self.seen.append(message["data"])
        return self.seen


@pytest.fixture
def feed(redis_client: fakeredis.FakeRedis) -> Iterator[Feed]:
    feed = Feed(redis_client)
    yield feed
    feed.pubsub.close()


def test_a_registry_never_written_has_no_generation(registry: PairRegistry) -> None:
    assert registry.generation() is None
    assert registry.read() == Snapshot(None, None, {})


def test_seeding_a_fresh_registry_mirrors_pairs_and_tells_the_feed(
    registry: PairRegistry, feed: Feed
) -> None:
    assert registry.seed(PAIRS)
    assert registry.read() == Snapshot(1, SOURCE_SETTING, {"ETH-EUR": "", "BTC-EUR": ""})
    assert feed.messages() == [b"r 1"]


def test_seeding_the_same_pairs_again_changes_nothing(registry: PairRegistry, feed: Feed) -> None:
    registry.seed(PAIRS)
    assert registry.seed(reversed(PAIRS))  # another process, the same PAIRS
    assert registry.generation() == 1
    assert feed.messages() == [b"r 1"]


def test_while_pairs_governs_a_process_with_other_pairs_makes_them_the_registry(
    registry: PairRegistry,
) -> None:
    registry.seed(PAIRS)
    assert registry.seed(["SOL-EUR", "ETH-EUR"])  # restarted with new PAIRS
    snapshot = registry.read()
    assert snapshot.entries == {"SOL-EUR": "", "ETH-EUR": ""}
    assert (snapshot.generation, snapshot.source) == (2, SOURCE_SETTING)


def test_once_the_command_changed_it_the_registry_wins_over_pairs(
    registry: PairRegistry,
) -> None:
    registry.seed(PAIRS)
    registry.add({"SOL-EUR": ""})
    before = registry.read()
    assert before.source == SOURCE_COMMAND
    assert not registry.seed(["ADA-EUR"])
    assert registry.read() == before


def test_seeding_past_the_bound_is_refused_and_writes_nothing(
    registry: PairRegistry, redis_client: fakeredis.FakeRedis
) -> None:
    with pytest.raises(RegistryRefused, match="REGISTRY_MAX_PAIRS"):
        registry.seed([f"P{i}-EUR" for i in range(6)])
    assert redis_client.dbsize() == 0


def test_add_counts_new_pairs_and_updates_the_others(registry: PairRegistry, feed: Feed) -> None:
    registry.seed(PAIRS)
    assert registry.add({"ETH-EUR": "60:20", "SOL-EUR": ":5"}) == (1, 3)
    snapshot = registry.read()
    assert snapshot.entries == {"ETH-EUR": "60:20", "BTC-EUR": "", "SOL-EUR": ":5"}
    assert (snapshot.generation, snapshot.source) == (2, SOURCE_COMMAND)
    assert feed.messages() == [b"r 1", b"r 2"]


def test_add_past_the_bound_is_refused_and_writes_nothing(
    registry: PairRegistry, redis_client: fakeredis.FakeRedis, feed: Feed
) -> None:
    registry.seed(PAIRS)
    before = registry.read()
    with pytest.raises(RegistryRefused, match=r"would hold 6 pairs.*bound of 5") as caught:
        registry.add({f"P{i}-EUR": "" for i in range(4)})
    assert "nothing was added" in str(caught.value)
    assert registry.read() == before
    assert feed.messages() == [b"r 1"]
    # Exactly at the bound is fine, and updating known pairs adds nothing to it.
    assert registry.add({f"P{i}-EUR": "" for i in range(3)}) == (3, 5)
    assert registry.add({"ETH-EUR": "60:", "P0-EUR": ":5"}) == (0, 5)
    assert redis_client.hlen(registry_key()) == 5


def test_remove_is_all_or_nothing_and_names_the_unknown(registry: PairRegistry, feed: Feed) -> None:
    registry.seed(PAIRS)
    with pytest.raises(RegistryRefused, match=r"not known pairs: SOL-EUR, ADA-EUR;"):
        registry.remove(["ETH-EUR", "SOL-EUR", "ADA-EUR"])
    assert registry.read() == Snapshot(1, SOURCE_SETTING, {"ETH-EUR": "", "BTC-EUR": ""})
    registry.remove(["ETH-EUR"])
    assert registry.read() == Snapshot(2, SOURCE_COMMAND, {"BTC-EUR": ""})
    assert feed.messages() == [b"r 1", b"r 2"]


def test_replace_makes_the_registry_exactly_the_entries(registry: PairRegistry, feed: Feed) -> None:
    registry.seed(PAIRS)
    assert registry.replace({"ETH-EUR": "60:", "SOL-EUR": "", "ADA-EUR": ""}) == (2, 1)
    snapshot = registry.read()
    assert snapshot.entries == {"ETH-EUR": "60:", "SOL-EUR": "", "ADA-EUR": ""}
    assert (snapshot.generation, snapshot.source) == (2, SOURCE_COMMAND)
    # The same entries again: no new generation, nothing on the feed.
    assert registry.replace({"ETH-EUR": "60:", "SOL-EUR": "", "ADA-EUR": ""}) == (0, 0)
    assert registry.generation() == 2
    assert feed.messages() == [b"r 1", b"r 2"]


def test_replacing_with_what_pairs_says_still_hands_the_registry_to_the_command(
    registry: PairRegistry,
) -> None:
    registry.seed(PAIRS)
    assert registry.replace(dict.fromkeys(PAIRS, "")) == (0, 0)
    assert registry.read().source == SOURCE_COMMAND
    assert not registry.seed(["SOL-EUR"])


def test_a_changed_freshness_alone_is_a_change(registry: PairRegistry) -> None:
    registry.seed(PAIRS)
    assert registry.replace({"ETH-EUR": "60:", "BTC-EUR": ""}) == (0, 0)
    assert registry.generation() == 2
    assert registry.read().entries["ETH-EUR"] == "60:"


def test_replace_past_the_bound_is_refused_and_writes_nothing(
    registry: PairRegistry, redis_client: fakeredis.FakeRedis
) -> None:
    registry.seed(PAIRS)
    before = registry.read()
    with pytest.raises(RegistryRefused, match="nothing was written"):
        registry.replace({f"P{i}-EUR": "" for i in range(6)})
    assert registry.read() == before
    assert redis_client.hlen(registry_state_key()) == 2  # generation and source only
