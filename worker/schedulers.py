"""Beat's scheduler: the schedule in memory, every entry due as soon as beat starts,
and the pair registry followed on every tick."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import redis
from celery.beat import Scheduler
from kombu.exceptions import OperationalError

from beat_schedule import REFRESH_ALL_TASK, REFRESH_BATCH_TASK, skew_tolerant_expiry
from predictions.infra import write_beat_tick
from predictions.wiring import Wiring, wire

log = logging.getLogger(__name__)

# How often beat looks at the registry (its longest sleep between ticks).
REGISTRY_LOOK_SECONDS = 1.0


class WarmStartScheduler(Scheduler):  # type: ignore[misc]
    """Celery's in-memory Scheduler, but refreshing at start-up.

    Celery's schedulers first run an interval entry one interval after start, so a fresh
    system (or a beat restarted after an outage) would leave the cache cold that long.
    Each refresh is sent with its deadline by Redis's clock (``not_after``): one not
    run within its interval is dropped by the worker, whatever the hosts' clocks say,
    so persisting the schedule to a file would buy nothing.
    """

    def setup_schedule(self) -> None:
        # Pairs known at the last look, and the slot last sent for each refresh
        # interval of a pair's own (the settings' interval is the schedule's entry).
        self._known_pairs: frozenset[str] | None = None
        self._sent_slots: dict[float, int] = {}
        super().setup_schedule()
        long_ago = self.app.now() - timedelta(days=1)
        for entry in self.schedule.values():
            entry.last_run_at = long_ago

    def apply_async(
        self, entry: Any, producer: Any = None, advance: bool = True, **kwargs: Any
    ) -> Any:
        """Send a due entry, stamped with the instant (Redis's clock) it is stale at."""
        interval = self.app.settings.refresh_interval_seconds
        entry.kwargs = {**(entry.kwargs or {}), "not_after": self.wiring().clock.now() + interval}
        return super().apply_async(entry, producer, advance, **kwargs)

    def wiring(self) -> Wiring:
        """Beat's Redis client and clock, made on first use (after Celery set it up)."""
        if not hasattr(self, "_wiring"):
            self._wiring = wire(self.app.settings, role="beat")
            self._wiring.known.seed()
        return self._wiring

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Run due entries, follow the registry, then leave the time of this tick in
        Redis for /metrics."""
        next_in: float = super().tick(*args, **kwargs)
        settings = self.app.settings
        try:
            wiring = self.wiring()
            try:
                self.follow_registry(wiring)
            except OperationalError as exc:
                # The broker is away: as Celery does with the schedule's own entries,
                # say so and go on (raised from tick, it would stop beat).
                log.error("could not send refreshes for the pair registry: %r", exc)
            write_beat_tick(
                wiring.redis, wiring.clock.now(), 10 * settings.refresh_interval_seconds
            )
        except redis.RedisError as exc:  # the schedule goes on without its heartbeat
            log.warning("could not record beat's tick: %r", exc)
        return min(next_in, REGISTRY_LOOK_SECONDS)

    def follow_registry(self, wiring: Wiring) -> None:
        """Refresh pairs just added at once (not at the next interval), and send each
        refresh interval of a pair's own its refresh_all when its slot turns."""
        settings = self.app.settings
        known = wiring.known
        known.reload_if_changed()
        now = wiring.clock.now()
        added: frozenset[str] = frozenset()
        if self._known_pairs is not None and known.pairs is not self._known_pairs:
            added = known.pairs - self._known_pairs  # once per change, not per tick
        self._known_pairs = known.pairs
        if added and settings.precompute == "all":
            interval = settings.refresh_interval_seconds
            ordered = sorted(added)
            size = settings.refresh_batch_size
            for first in range(0, len(ordered), size):
                self.app.send_task(
                    REFRESH_BATCH_TASK,
                    args=[ordered[first : first + size]],
                    kwargs={"not_after": now + interval},
                    expires=skew_tolerant_expiry(interval),
                )
            log.info("refreshing pairs just added pairs=%d", len(ordered))
        for interval in known.by_refresh_interval():
            if interval == settings.refresh_interval_seconds:
                continue  # the schedule's own entry
            slot = int(now // interval)
            if self._sent_slots.get(interval) == slot:
                continue
            self._sent_slots[interval] = slot
            self.app.send_task(
                REFRESH_ALL_TASK,
                kwargs={"not_after": now + interval, "interval": interval},
                expires=skew_tolerant_expiry(interval),
            )
