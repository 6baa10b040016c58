"""Which pairs clients ask for: recorded by the API, read by the refresh (PRECOMPUTE).

An API process notes each pair it is asked for in memory and sends the set to Redis at
most once per FLUSH_SECONDS, in one ZADD scored by the time (Redis's clock): a request
costs a set insertion, never a Redis write. Under PRECOMPUTE=asked the refresh keeps
warm the pairs asked within their last ASKED_LIFETIMES freshness lifetimes; the others
are computed on their next request.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

import redis

from predictions.infra import keys
from predictions.infra.background import Background, repeat
from predictions.registry.known import KnownPairs

log = logging.getLogger(__name__)

FLUSH_SECONDS = 1.0
ASKED_LIFETIMES = 3
# Members per ZADD: one command stays small however many pairs a second brought.
_CHUNK = 1000


class AskedPairs:
    """This process's asked pairs, flushed to Redis from a background thread."""

    def __init__(
        self,
        client: redis.Redis,
        now: Callable[[], float],
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self.redis = client
        self.now = now
        self.flush_seconds = flush_seconds
        self._asked: set[str] = set()
        self._flusher = Background(self._flush_forever, "asked-pairs-flusher")

    def record(self, pair: str) -> None:
        """Note that a client asked for ``pair`` (a known one)."""
        self._asked.add(pair)

    def ensure_flushing(self) -> None:
        """Flush from a background thread, once per process."""
        self._flusher.ensure_started()

    def flush(self) -> int:
        """Send what was asked since the last flush; returns how many pairs."""
        asked, self._asked = self._asked, set()
        if not asked:
            return 0
        score = self.now()
        members = list(asked)
        pipe = self.redis.pipeline(transaction=False)
        for first in range(0, len(members), _CHUNK):
            pipe.zadd(keys.asked_pairs_key(), dict.fromkeys(members[first : first + _CHUNK], score))
        try:
            pipe.execute()
        except redis.RedisError:
            self._asked |= asked  # kept for the next flush, still bounded by the pairs
            raise
        return len(members)

    def _flush_forever(self) -> None:
        pause = threading.Event()
        repeat(lambda: pause.wait(self.flush_seconds), self.flush, "record asked pairs")


def recently_asked(
    client: redis.Redis,
    now: float,
    candidates: Iterable[str],
    known: KnownPairs,
) -> list[str]:
    """The candidates asked within their last ASKED_LIFETIMES freshness lifetimes, in
    their given order. Entries older than any known pair's window are dropped from
    Redis on the way, so the set stays bounded."""
    candidates = list(candidates)
    if not candidates:
        return []
    ttl_of = known.ttl_seconds
    window = max(ttl_of(pair) for pair in candidates) * ASKED_LIFETIMES
    pipe = client.pipeline(transaction=False)
    forget_unasked(pipe, now, known)
    pipe.zrangebyscore(keys.asked_pairs_key(), now - window, "+inf", withscores=True)
    _, asked = pipe.execute()
    when = {(p.decode() if isinstance(p, bytes) else p): score for p, score in asked}
    return [
        pair
        for pair in candidates
        if pair in when and when[pair] >= now - ttl_of(pair) * ASKED_LIFETIMES
    ]


def forget_unasked(
    client: redis.Redis | redis.client.Pipeline, now: float, known: KnownPairs
) -> None:
    """Drop the pairs asked before any known pair's window (removed pairs among
    them), so the set stays bounded whatever PRECOMPUTE says."""
    oldest = now - known.longest_ttl() * ASKED_LIFETIMES
    client.zremrangebyscore(keys.asked_pairs_key(), "-inf", f"({oldest}")


def most_recently_asked(client: redis.Redis, count: int, known: KnownPairs) -> list[str]:
    """Up to ``count`` known pairs, the most recently asked first."""
    newest = client.zrevrange(keys.asked_pairs_key(), 0, count - 1)
    pairs = (p.decode() if isinstance(p, bytes) else p for p in newest)
    return [pair for pair in pairs if pair in known.pairs]
