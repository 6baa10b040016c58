"""PredictionStore: the one place that reads and writes predictions in Redis, and the
write feed's messages, which the store's own writes publish.

The write feed: every prediction write and model-state change, on one pub/sub channel.
Writers publish inside the same script or transaction that changes Redis (the store's
compare-and-set, a rollout's pending mark and flip), so a message is sent exactly when
the change is made. API processes follow it (predictions.cache.near_cache.WriteFollower)
to keep their near copies current. Pub/sub is at most once: a follower that loses its
subscription falls back to reading Redis.

Messages (bytes):
    w <version> <pair> <prediction JSON>     a prediction was stored
    d <version> <pair>                       a prediction was deleted on purpose
    s <version or -> <1 if a flip is pending, else 0>   the active version's state
    r <generation>                           the pair registry changed (predictions.registry)
"""

from __future__ import annotations

import dataclasses
import heapq
import logging
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import redis

from predictions.infra.clock import Clock
from predictions.infra.keys import (
    PREDICTION_PREFIX,
    active_version_key,
    flip_pending_key,
    prediction_key,
    updates_channel,
)
from predictions.model.prediction import InvalidPrediction, Prediction, format_time, parse_time

log = logging.getLogger(__name__)

FEED_CHANNEL = updates_channel()


def write_prefix(pair: str, version: str) -> bytes:
    """What a write's message starts with; the stored JSON follows."""
    return f"w {version} {pair} ".encode()


def delete_message(pair: str, version: str) -> bytes:
    return f"d {version} {pair}".encode()


def state_message(version: str | None, flip_pending: bool) -> bytes:
    return f"s {version or '-'} {int(flip_pending)}".encode()


class FeedMessage(NamedTuple):
    """One message of the write feed, split into its fields (see the module docstring)."""

    kind: bytes  # b"w", b"d" or b"s"
    version: str | None  # None: no version is active (a state message only)
    pair: str = ""  # of a write or a delete
    body: bytes = b""  # the prediction JSON of a write
    flip_pending: bool = False  # of a state message


def parse_feed_message(data: bytes) -> FeedMessage:
    kind, _, rest = data.partition(b" ")
    if kind == b"w":
        version, pair, body = (rest.split(b" ", 2) + [b"", b""])[:3]
        return FeedMessage(kind, version.decode(), pair.decode(), body)
    first, _, second = rest.decode().partition(" ")
    if kind == b"s":
        return FeedMessage(kind, None if first == "-" else first, flip_pending=second == "1")
    return FeedMessage(kind, first, second)


def read_state(client: redis.Redis) -> tuple[str | None, bool]:
    """The active version and whether a flip is pending, in one round trip."""
    pipe = client.pipeline(transaction=False)
    pipe.get(active_version_key())
    pipe.exists(flip_pending_key())
    raw, pending = pipe.execute()
    version = raw.decode() if isinstance(raw, bytes) else raw
    return version, bool(pending)


# The active version, whether a flip is pending, and each pair's prediction by that
# version: one round trip, one atomic view, so that a response never mixes versions.
# A key of the wrong type reads as absent (pcall), like an invalid entry.
_READ_ACTIVE = """
local version = redis.call('GET', KEYS[1])
local pending = redis.call('EXISTS', KEYS[2])
local values = {}
if version then
    for i = 2, #ARGV do
        local value = redis.pcall('GET', ARGV[1] .. version .. ':' .. ARGV[i])
        if type(value) == 'table' then value = false end
        values[i - 1] = value
    end
end
return {version, pending, values}
"""

# Each pair's computed_at and fresh_until by the active version (for /metrics): the
# two timestamps, not the whole prediction, so that many pairs cost little to send.
_READ_TIMES = """
local version = redis.call('GET', KEYS[1])
local values = {}
if version then
    for i = 2, #ARGV do
        local value = redis.pcall('GET', ARGV[1] .. version .. ':' .. ARGV[i])
        if type(value) == 'string' then
            local computed = string.match(value, '"computed_at":"([^"]*)"')
            local fresh = string.match(value, '"fresh_until":"([^"]*)"')
            if computed and fresh then value = computed .. ' ' .. fresh else value = false end
        else
            value = false
        end
        values[i - 1] = value
    end
end
return values
"""

# Monotonic writes: store the prediction unless the key holds one computed at the same
# time or later (computed_at is ISO 8601 UTC with milliseconds, so text order is time
# order). A computation that finishes late never overwrites a newer prediction. What is
# stored is published on the write feed in the same step.
_WRITE_IF_NEWER = """
local current = redis.pcall('GET', KEYS[1])
if type(current) == 'string' then
    local stored = string.match(current, '"computed_at":"([^"]*)"')
    if stored and stored >= ARGV[2] then return 0 end
end
redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5] .. ARGV[1])
return 1
"""


@dataclasses.dataclass(frozen=True, slots=True)
class StoredFreshness:
    """How fresh the stored predictions of many pairs are, for /metrics."""

    counts: dict[str, int]  # pairs "fresh", "stale" (within grace) and "missing"
    # The worst pairs, worst first: missing ones (None), then the oldest computed_at.
    worst: list[tuple[str, float | None]]


@dataclasses.dataclass(frozen=True, slots=True)
class ActiveRead:
    """What one read saw: the active model version and its predictions."""

    version: str | None  # None: no model version is active yet (a fresh cache)
    flip_pending: bool  # a rollout is about to flip the active version
    predictions: dict[str, Prediction | None]


class PredictionStore:
    """Predictions in Redis, one string key per model version and pair, with an expiry.

    A prediction is kept ``grace_seconds`` past its freshness (fresh_until), so that it
    can be served, marked stale, while a new one is computed. Contract: a read may find
    nothing (never computed, past its grace, or an entry that is not a valid prediction
    for that pair and version) and gives None; a prediction it gives may be fresh or
    stale, and the caller tells which (Prediction.is_fresh). A write sets the value and
    its absolute expiry in one command, only if no newer prediction is stored, so no key
    outlives its grace and no late write goes back in time. Redis errors are not caught
    here: the caller knows what to answer.
    """

    def __init__(
        self,
        client: redis.Redis,
        clock: Clock,
        grace_seconds: float = 0.0,
    ) -> None:
        self.redis = client
        self.grace_seconds = grace_seconds
        self.clock = clock
        self._read_active = client.register_script(_READ_ACTIVE)
        self._read_times = client.register_script(_READ_TIMES)
        self._write_if_newer = client.register_script(_WRITE_IF_NEWER)

    def read(self, pair: str) -> ActiveRead:
        """The active version's prediction for one pair (see read_many)."""
        return self.read_many([pair])

    def read_many(self, pairs: Sequence[str]) -> ActiveRead:
        """The active version and its predictions for several pairs, in one round trip."""
        version, pending, values = self._read_active(
            keys=[active_version_key(), flip_pending_key()], args=[PREDICTION_PREFIX, *pairs]
        )
        if version is None:
            return ActiveRead(None, bool(pending), dict.fromkeys(pairs))
        version = version.decode() if isinstance(version, bytes) else str(version)
        predictions = {
            pair: self._decode(pair, raw or None, version)
            for pair, raw in zip(pairs, values, strict=True)
        }
        return ActiveRead(version, bool(pending), predictions)

    def freshness(
        self, pairs: Sequence[str], now: float, worst: int, chunk: int = 2000
    ) -> StoredFreshness:
        """Every pair counted by the state of its stored prediction, and the ``worst``
        missing or oldest ones; a chunk of pairs per round trip (a few milliseconds of
        Redis each). Timestamps are compared as text (ISO 8601 UTC with milliseconds
        sorts as time does): only the worst are parsed, so many pairs cost little."""
        now_text = format_time(now)
        counts = {"fresh": 0, "stale": 0, "missing": 0}
        found: list[tuple[str, str]] = []  # (computed_at text, pair); "" if missing
        for first in range(0, len(pairs), chunk):
            part = pairs[first : first + chunk]
            values = self._read_times(keys=[active_version_key()], args=[PREDICTION_PREFIX, *part])
            for pair, raw in zip(part, values or [None] * len(part), strict=True):
                if not raw:
                    counts["missing"] += 1
                    found.append(("", pair))
                    continue
                computed, _, fresh = (raw.decode() if isinstance(raw, bytes) else raw).partition(
                    " "
                )
                counts["fresh" if fresh > now_text else "stale"] += 1
                found.append((computed, pair))
        ordered = []
        for computed, pair in heapq.nsmallest(worst, found):
            try:
                ordered.append((pair, parse_time(computed, pair) if computed else None))
            except InvalidPrediction:
                ordered.append((pair, None))
        return StoredFreshness(counts, ordered)

    def read_version(self, pair: str, version: str) -> Prediction | None:
        """The pair's prediction by one given version, fresh or within grace, or None."""
        try:
            raw = self.redis.get(prediction_key(pair, version))
        except redis.ResponseError as exc:
            # WRONGTYPE: something else owns the key; the next write replaces it.
            log.warning("unreadable prediction entry pair=%s error=%s", pair, exc)
            return None
        return self._decode(pair, raw, version)

    def write(self, prediction: Prediction, now: float) -> bool:
        """Store a prediction until its grace ends; False if not stored (too old)."""
        return self.write_many([prediction], now) == 1

    def write_many(self, predictions: Iterable[Prediction], now: float) -> int:
        """Store predictions in one round trip; return how many were stored.

        Each goes under its own model version. One whose grace has passed, or that is
        older than what the key holds, is not stored.
        """
        pipe = self.redis.pipeline(transaction=False)
        sent = 0
        for prediction in predictions:
            keep_until = self.keep_until(prediction)
            if keep_until <= now:
                log.warning("not storing a prediction past its grace pair=%s", prediction.pair)
                continue
            # An absolute expiry: a write that a frozen Redis receives late (or twice,
            # through a retry) cannot outlive the prediction's grace.
            self._write_if_newer(
                keys=[prediction_key(prediction.pair, prediction.model_version)],
                args=[
                    prediction.to_json(),
                    format_time(prediction.computed_at),
                    int(keep_until * 1000),
                    FEED_CHANNEL,
                    write_prefix(prediction.pair, prediction.model_version),
                ],
                client=pipe,
            )
            sent += 1
        if not sent:
            return 0
        return sum(int(stored) for stored in pipe.execute())

    def forget(self, pair: str, version: str) -> bool:
        """Delete a pair's prediction (to see a miss on purpose); True if there was one.
        Followers drop their near copies too."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(prediction_key(pair, version))
        pipe.publish(FEED_CHANNEL, delete_message(pair, version))
        deleted, _ = pipe.execute()
        return bool(deleted)

    def keep_until(self, prediction: Prediction) -> float:
        """When the prediction may no longer be served at all, even marked stale."""
        return prediction.fresh_until + self.grace_seconds

    def _decode(self, pair: str, raw: object, version: str) -> Prediction | None:
        if raw is None:
            return None
        if not isinstance(raw, bytes):  # a client made with decode_responses=True
            raw = str(raw).encode()
        try:
            prediction = Prediction.from_json(raw, pair)
        except InvalidPrediction as exc:
            log.warning("invalid prediction entry pair=%s error=%s", pair, exc)
            return None
        if prediction.model_version != version:
            log.warning("prediction entry of another version pair=%s", pair)
            return None
        # Redis expires it by its own clock; ours decides what we serve.
        return prediction if self.clock.now() < self.keep_until(prediction) else None
