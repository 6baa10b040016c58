"""PairRegistry: the known pairs, kept in Redis, and every change to them.

One hash holds each known pair and its own freshness (registry/freshness.py); a second
holds the registry's generation, bumped by every change, and its source: ``PAIRS``
while the registry only mirrors that setting, ``command`` once the pairs command changed
it. Every change runs as one script, so it is atomic, checks its bound first, and
publishes ``r <generation>`` on the write feed in the same step: processes following the
feed re-read at once, the others on their next look at the generation.

How PAIRS and the registry combine: while the source is ``PAIRS``, a process that
starts with other PAIRS makes the registry those pairs (a restart with new PAIRS works
as it always did); once the pairs command has changed it, the registry wins and PAIRS
is not read again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence

import redis

from predictions.cache import FEED_CHANNEL
from predictions.infra import keys

SOURCE_SETTING = "PAIRS"
SOURCE_COMMAND = "command"


class RegistryRefused(Exception):
    """A change the registry refused as a whole: nothing was written."""


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """The registry as one read saw it."""

    generation: int | None  # None: never written (no process has seeded it yet)
    source: str | None
    entries: dict[str, str]  # pair -> its own freshness, encoded


# Add or update pairs, unless the registry would pass its bound.
_ADD = """
local fresh = 0
for i = 3, #ARGV, 2 do
    if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then fresh = fresh + 1 end
end
local total = redis.call('HLEN', KEYS[1]) + fresh
if total > tonumber(ARGV[1]) then return {-1, total} end
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
local generation = redis.call('HINCRBY', KEYS[2], 'generation', 1)
redis.call('HSET', KEYS[2], 'source', 'command')
redis.call('PUBLISH', ARGV[2], 'r ' .. generation)
return {fresh, total}
"""

# Remove pairs, all or none: any unknown one is named and nothing changes.
_REMOVE = """
local unknown = {}
for i = 2, #ARGV do
    if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 0 then table.insert(unknown, ARGV[i]) end
end
if #unknown > 0 then return {0, unknown} end
for i = 2, #ARGV do redis.call('HDEL', KEYS[1], ARGV[i]) end
local generation = redis.call('HINCRBY', KEYS[2], 'generation', 1)
redis.call('HSET', KEYS[2], 'source', 'command')
redis.call('PUBLISH', ARGV[1], 'r ' .. generation)
return {1, unknown}
"""

# Make the registry exactly the given pairs; returns how many were added and removed.
# ARGV[2] is the source to record; ARGV[3] '1' leaves a registry the command changed.
_REPLACE = """
if ARGV[3] == '1' and redis.call('HGET', KEYS[2], 'source') == 'command' then
    return {-1, 0}
end
local old = {}
for _, pair in ipairs(redis.call('HKEYS', KEYS[1])) do old[pair] = true end
local added, changed = 0, 0
for i = 4, #ARGV, 2 do
    if old[ARGV[i]] then
        old[ARGV[i]] = nil
        if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then changed = changed + 1 end
    else
        added = added + 1
    end
end
local removed = 0
for pair, _ in pairs(old) do removed = removed + 1 end
local exists = redis.call('EXISTS', KEYS[2])
if added == 0 and removed == 0 and changed == 0 and exists == 1 then
    if redis.call('HGET', KEYS[2], 'source') ~= ARGV[2] then
        redis.call('HSET', KEYS[2], 'source', ARGV[2])
    end
    return {0, 0}
end
redis.call('DEL', KEYS[1])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
local generation = redis.call('HINCRBY', KEYS[2], 'generation', 1)
redis.call('HSET', KEYS[2], 'source', ARGV[2])
redis.call('PUBLISH', ARGV[1], 'r ' .. generation)
return {added, removed}
"""


class PairRegistry:
    """The known pairs in Redis (see the module's docstring). Redis errors are not
    caught here: the caller knows what to say."""

    def __init__(self, client: redis.Redis, max_pairs: int) -> None:
        self.redis = client
        self.max_pairs = max_pairs
        self._add = client.register_script(_ADD)
        self._remove = client.register_script(_REMOVE)
        self._replace = client.register_script(_REPLACE)

    def generation(self) -> int | None:
        """The registry's generation: a process re-reads the pairs when it changes."""
        raw = self.redis.hget(keys.registry_state_key(), "generation")
        return None if raw is None else int(raw)

    def read(self) -> Snapshot:
        """Every known pair with its own freshness, and the generation read with them."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hgetall(keys.registry_key())
        pipe.hmget(keys.registry_state_key(), ["generation", "source"])
        entries, (generation, source) = pipe.execute()
        return Snapshot(
            None if generation is None else int(generation),
            _text(source) if source is not None else None,
            {_text(pair): _text(own) for pair, own in entries.items()},
        )

    def add(self, entries: Mapping[str, str]) -> tuple[int, int]:
        """Add pairs (or set their freshness); returns (how many were new, the total).
        RegistryRefused if the registry would pass its bound."""
        fresh, total = self._add(
            keys=[keys.registry_key(), keys.registry_state_key()],
            args=[self.max_pairs, FEED_CHANNEL, *_flat(entries)],
        )
        if fresh < 0:
            raise RegistryRefused(
                f"the registry would hold {total:,} pairs, past its bound of "
                f"{self.max_pairs:,} (REGISTRY_MAX_PAIRS); nothing was added"
            )
        return int(fresh), int(total)

    def remove(self, pairs: Sequence[str]) -> None:
        """Remove known pairs; RegistryRefused, naming them, if any is unknown."""
        _, unknown = self._remove(
            keys=[keys.registry_key(), keys.registry_state_key()],
            args=[FEED_CHANNEL, *pairs],
        )
        if unknown:
            named = ", ".join(_text(pair) for pair in unknown)
            raise RegistryRefused(f"not known pairs: {named}; nothing was removed")

    def replace(self, entries: Mapping[str, str]) -> tuple[int, int]:
        """Make the registry exactly ``entries``; returns (added, removed)."""
        self._check_bound(len(entries))
        added, removed = self._replace(
            keys=[keys.registry_key(), keys.registry_state_key()],
            args=[FEED_CHANNEL, SOURCE_COMMAND, "0", *_flat(entries)],
        )
        return int(added), int(removed)

    def seed(self, pairs: Iterable[str]) -> bool:
        """Mirror PAIRS, unless the pairs command changed the registry; False then
        (the registry wins)."""
        entries = dict.fromkeys(pairs, "")
        self._check_bound(len(entries))
        added, _ = self._replace(
            keys=[keys.registry_key(), keys.registry_state_key()],
            args=[FEED_CHANNEL, SOURCE_SETTING, "1", *_flat(entries)],
        )
        return int(added) >= 0

    def _check_bound(self, count: int) -> None:
        if count > self.max_pairs:
            raise RegistryRefused(
                f"{count:,} pairs are past the registry's bound of {self.max_pairs:,} "
                "(REGISTRY_MAX_PAIRS); nothing was written"
            )


def _flat(entries: Mapping[str, str]) -> list[str]:
    return [value for pair, own in entries.items() for value in (pair, own)]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
