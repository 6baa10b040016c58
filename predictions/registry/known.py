"""KnownPairs: one process's view of the registry, current within a second.

A request never reads the registry: it looks a pair up in this view, a frozenset
swapped whole. The view follows the registry by its generation: a background thread (a
greenlet under gevent) reads the generation every RELOAD_SECONDS, and sooner when the
write feed says it changed (``changed``), and re-reads the pairs only when it moved.
So a change reaches every process within about a second, feed or no feed; the worker
and beat, which follow no feed, call ``reload_if_changed`` before each use instead.

Until some process has written the registry (a fresh Redis), or while Redis cannot be
read at start, the view is the PAIRS setting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import redis

from predictions.infra.background import Background, repeat
from predictions.registry.freshness import Freshness, InvalidFreshness, OwnFreshness
from predictions.registry.pair_registry import PairRegistry, RegistryRefused

log = logging.getLogger(__name__)

RELOAD_SECONDS = 1.0


class KnownPairs:
    def __init__(
        self,
        registry: PairRegistry,
        fallback: Sequence[str],
        defaults: Freshness,
        reload_seconds: float = RELOAD_SECONDS,
    ) -> None:
        self.registry = registry
        self.defaults = defaults
        self.reload_seconds = reload_seconds
        self.pairs: frozenset[str] = frozenset(fallback)
        self.generation: int | None = None
        self._fallback = tuple(fallback)
        self._own: dict[str, Freshness] = {}  # only pairs with freshness of their own
        self._sorted: list[str] | None = None
        self._by_refresh: dict[float, list[str]] | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._watcher = Background(self._watch, "pair-registry-watcher")

    def __contains__(self, pair: object) -> bool:
        return pair in self.pairs

    def freshness(self, pair: str) -> Freshness:
        return self._own.get(pair, self.defaults)

    def ttl_seconds(self, pair: str) -> float:
        own = self._own.get(pair)
        return self.defaults.ttl_seconds if own is None else own.ttl_seconds

    def longest_ttl(self) -> float:
        """The longest TTL of any known pair."""
        return max([self.defaults.ttl_seconds, *(own.ttl_seconds for own in self._own.values())])

    def sorted_pairs(self) -> list[str]:
        """The known pairs in name order (for paging), computed once per generation."""
        ordered = self._sorted
        if ordered is None:
            ordered = self._sorted = sorted(self.pairs)
        return ordered

    def by_refresh_interval(self) -> dict[float, list[str]]:
        """The known pairs grouped by how often they are refreshed, each in name order."""
        groups = self._by_refresh
        if groups is None:
            groups = {}
            for pair in self.sorted_pairs():
                groups.setdefault(self.freshness(pair).refresh_seconds, []).append(pair)
            self._by_refresh = groups
        return groups

    def seed(self) -> None:
        """Make the registry mirror PAIRS (see PairRegistry.seed), then read it. A
        process whose Redis user may not write the registry (the API's) only reads."""
        try:
            mirrored = self._seed_unless_read_only()
            self.reload_if_changed()
        except redis.RedisError as exc:
            log.warning("cannot read the pair registry yet, serving PAIRS: %r", exc)
            return
        if not mirrored and self.pairs != frozenset(self._fallback):
            log.warning(
                "the pair registry wins over PAIRS: it was changed with the pairs command "
                "(python -m predictions.pairs) and holds %d pairs",
                len(self.pairs),
            )

    def _seed_unless_read_only(self) -> bool:
        try:
            return self.registry.seed(self._fallback)
        except RegistryRefused as exc:
            log.error("PAIRS not written to the registry: %s", exc)
        except redis.ResponseError as exc:
            if "NOPERM" not in str(exc):
                raise
            # The API's Redis user, which may not write it: beat and the workers seed it.
        return True

    def reload_if_changed(self) -> bool:
        """Re-read the registry if its generation moved; True if the view changed."""
        generation = self.registry.generation()
        if generation is None or generation == self.generation:
            return False
        with self._lock:
            snapshot = self.registry.read()
            if snapshot.generation is None or snapshot.generation == self.generation:
                return False
            own: dict[str, Freshness] = {}
            for pair, text in snapshot.entries.items():
                if text:
                    own[pair] = self._resolve(pair, text)
            self._own = own
            self.pairs = frozenset(snapshot.entries)
            self._sorted = self._by_refresh = None
            self.generation = snapshot.generation
        log.info(
            "known pairs read pairs=%d generation=%d",
            len(self.pairs),
            snapshot.generation,
            extra={"pairs": len(self.pairs), "generation": snapshot.generation},
        )
        return True

    def _resolve(self, pair: str, text: str) -> Freshness:
        try:
            return OwnFreshness.decode(text).resolve(self.defaults)
        except InvalidFreshness as exc:
            # Checked when it was written, against that process's settings; this
            # process's own settings may disagree: serve the pair with its defaults.
            log.warning("pair %s keeps the settings' freshness: %s", pair, exc)
            return self.defaults

    def changed(self) -> None:
        """The write feed says the registry changed: look now, not at the next tick."""
        self._wake.set()

    def ensure_watching(self) -> None:
        """Follow the registry from a background thread, once per process."""
        self._watcher.ensure_started()

    def _watch(self) -> None:
        def wait() -> None:
            self._wake.wait(self.reload_seconds)
            self._wake.clear()

        repeat(wait, self.reload_if_changed, "read the pair registry")
