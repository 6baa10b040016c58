"""PairRegistry: the known pairs, kept in Redis, and every change to them.

One hash holds each known pair and its own freshness (registry/freshness.py); a second
holds the registry's generation, bumped by every change, and its source: ``PAIRS``
while the registry only mirrors that setting, ``command`` once the pairs command changed
it. A change publishes ``r <generation>`` on the write feed in the same step as it
bumps the generation: processes following the feed re-read at once, the others on their
next look at the generation.

Every change is all or nothing, and none holds Redis for long, however many pairs: a
small change is one script; a large one (a ``load``, or PAIRS at start) writes the new
hash under a staging key a chunk at a time, then swaps it in with one short script
(two RENAMEs, the old hash freed in the background), which also checks that nothing
changed the registry meanwhile. Reads go a chunk at a time too (HSCAN), and are
retried if the generation moved while they ran. One script over 100,000 pairs held
Redis for 190 ms here; one chunk holds it for about a millisecond.

How PAIRS and the registry combine: while the source is ``PAIRS``, a process that
starts with other PAIRS makes the registry those pairs (a restart with new PAIRS works
as it always did); once the pairs command has changed it, the registry wins and PAIRS
is not written again.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Mapping, Sequence

import redis

from predictions.cache import FEED_CHANNEL
from predictions.infra import keys

SOURCE_SETTING = "PAIRS"
SOURCE_COMMAND = "command"
# Pairs per command or script: each holds Redis for about a millisecond.
CHUNK = 5000
# A staging hash outlives its writer by this much at most.
STAGING_SECONDS = 300
# Attempts at a change whose registry another change moved meanwhile.
ATTEMPTS = 5


class RegistryRefused(Exception):
    """A change the registry refused as a whole: nothing was written."""


@dataclasses.dataclass(frozen=True, slots=True)
class Snapshot:
    """The registry as one read saw it."""

    generation: int | None  # None: never written (no process has seeded it yet)
    source: str | None
    entries: dict[str, str]  # pair -> its own freshness, encoded


# Add or update a few pairs, unless the registry would pass its bound.
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

# Swap a staged hash in for the registry. ARGV: the channel, the source to record, '1'
# to leave a registry the command changed (seeding), the generation the change was
# made from ('' for any). Returns -1 (left to the command), -2 (moved meanwhile) or the
# new generation. Constant time: the old hash is renamed away and freed in the background.
_SWAP = """
local function drop(key) if redis.call('EXISTS', key) == 1 then redis.call('UNLINK', key) end end
if ARGV[3] == '1' and redis.call('HGET', KEYS[2], 'source') == 'command' then
    drop(KEYS[3])
    return -1
end
if ARGV[4] ~= '' and (redis.call('HGET', KEYS[2], 'generation') or '') ~= ARGV[4] then
    drop(KEYS[3])
    return -2
end
if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('RENAME', KEYS[1], KEYS[4])
    redis.call('UNLINK', KEYS[4])
end
if redis.call('EXISTS', KEYS[3]) == 1 then
    redis.call('RENAME', KEYS[3], KEYS[1])
    redis.call('PERSIST', KEYS[1])
end
local generation = redis.call('HINCRBY', KEYS[2], 'generation', 1)
redis.call('HSET', KEYS[2], 'source', ARGV[2])
redis.call('PUBLISH', ARGV[1], 'r ' .. generation)
return generation
"""


class PairRegistry:
    """The known pairs in Redis (see the module's docstring). Redis errors are not
    caught here: the caller knows what to say."""

    def __init__(self, client: redis.Redis, max_pairs: int) -> None:
        self.redis = client
        self.max_pairs = max_pairs
        self._add = client.register_script(_ADD)
        self._remove = client.register_script(_REMOVE)
        self._swap = client.register_script(_SWAP)

    def generation(self) -> int | None:
        """The registry's generation: a process re-reads the pairs when it changes."""
        raw = self.redis.hget(keys.registry_state_key(), "generation")
        return None if raw is None else int(raw)

    def read(self) -> Snapshot:
        """Every known pair with its own freshness, as of one generation."""
        for _ in range(ATTEMPTS):
            generation, source = self._state()
            entries = {
                _text(pair): _text(own)
                for pair, own in self.redis.hscan_iter(keys.registry_key(), count=CHUNK)
            }
            if self._state()[0] == generation:
                return Snapshot(generation, source, entries)
        raise RegistryRefused("the registry kept changing while it was read; try again")

    def add(self, entries: Mapping[str, str]) -> tuple[int, int]:
        """Add pairs (or set their freshness); returns (how many were new, the total).
        RegistryRefused if the registry would pass its bound."""
        if len(entries) > CHUNK:
            return self._add_many(entries)
        fresh, total = self._add(
            keys=[keys.registry_key(), keys.registry_state_key()],
            args=[self.max_pairs, FEED_CHANNEL, *_flat(entries)],
        )
        if fresh < 0:
            raise self._past_bound(total, "nothing was added")
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
        if len(entries) > self.max_pairs:
            raise self._past_bound(len(entries), "nothing was written")
        current = self.read()
        if current.generation is not None and current.entries == entries:
            # Nothing to change, but the command has spoken: the registry is its now.
            self.redis.hset(keys.registry_state_key(), "source", SOURCE_COMMAND)
            return 0, 0
        self._swap_in(entries, SOURCE_COMMAND, leave_to_command=False, expected=None)
        return _added_removed(current.entries, entries)

    def seed(self, pairs: Iterable[str]) -> bool:
        """Mirror PAIRS, unless the pairs command changed the registry; False then
        (the registry wins)."""
        entries = dict.fromkeys(pairs, "")
        if self._state()[1] == SOURCE_COMMAND:  # before reading what may be many pairs
            return False
        current = self.read()
        if current.generation is not None and current.entries == entries:
            return True
        if len(entries) > self.max_pairs:
            raise self._past_bound(len(entries), "nothing was written")
        return self._swap_in(entries, SOURCE_SETTING, leave_to_command=True, expected=None)

    def _add_many(self, entries: Mapping[str, str]) -> tuple[int, int]:
        for _ in range(ATTEMPTS):
            current = self.read()
            merged = current.entries | dict(entries)
            if len(merged) > self.max_pairs:
                raise self._past_bound(len(merged), "nothing was added")
            expected = "" if current.generation is None else str(current.generation)
            if self._swap_in(merged, SOURCE_COMMAND, leave_to_command=False, expected=expected):
                return len(merged) - len(current.entries), len(merged)
        raise RegistryRefused("the registry kept changing meanwhile; nothing was added")

    def _swap_in(
        self,
        entries: Mapping[str, str],
        source: str,
        *,
        leave_to_command: bool,
        expected: str | None,
    ) -> bool:
        """Stage ``entries`` a chunk at a time, then swap them in; False if the swap was
        refused (left to the command, or the registry moved since ``expected``)."""
        token = uuid.uuid4().hex
        staging = keys.registry_staging_key(token)
        flat = list(entries.items())
        pipe = self.redis.pipeline(transaction=False)
        for first in range(0, len(flat), CHUNK):
            pipe.hset(staging, mapping=dict(flat[first : first + CHUNK]))
            pipe.expire(staging, STAGING_SECONDS)
        pipe.execute()
        generation = self._swap(
            keys=[
                keys.registry_key(),
                keys.registry_state_key(),
                staging,
                keys.registry_retired_key(token),
            ],
            args=[FEED_CHANNEL, source, "1" if leave_to_command else "0", expected or ""],
        )
        return int(generation) > 0

    def _state(self) -> tuple[int | None, str | None]:
        generation, source = self.redis.hmget(keys.registry_state_key(), ["generation", "source"])
        return (
            None if generation is None else int(generation),
            None if source is None else _text(source),
        )

    def _past_bound(self, count: int, outcome: str) -> RegistryRefused:
        return RegistryRefused(
            f"the registry would hold {count:,} pairs, past its bound of "
            f"{self.max_pairs:,} (REGISTRY_MAX_PAIRS); {outcome}"
        )


def _added_removed(old: Mapping[str, str], new: Mapping[str, str]) -> tuple[int, int]:
    return len(new.keys() - old.keys()), len(old.keys() - new.keys())


def _flat(entries: Mapping[str, str]) -> list[str]:
    return [value for pair, own in entries.items() for value in (pair, own)]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
