"""Beat's scheduler: the schedule in memory, every entry due as soon as beat starts."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import redis
from celery.beat import Scheduler

from predictions.infra import write_beat_tick
from predictions.wiring import Wiring, wire

log = logging.getLogger(__name__)


class WarmStartScheduler(Scheduler):  # type: ignore[misc]
    """Celery's in-memory Scheduler, but refreshing at start-up.

    Celery's schedulers first run an interval entry one interval after start, so a fresh
    system (or a beat restarted after an outage) would leave the cache cold that long.
    Each refresh is sent with its deadline by Redis's clock (``not_after``): one not
    run within its interval is dropped by the worker, whatever the hosts' clocks say,
    so persisting the schedule to a file would buy nothing.
    """

    def setup_schedule(self) -> None:
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
        return self._wiring

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Run due entries, then leave the time of this tick in Redis for /metrics."""
        next_in: float = super().tick(*args, **kwargs)
        settings = self.app.settings
        try:
            wiring = self.wiring()
            write_beat_tick(
                wiring.redis, wiring.clock.now(), 10 * settings.refresh_interval_seconds
            )
        except redis.RedisError as exc:  # the schedule goes on without its heartbeat
            log.warning("could not record beat's tick: %r", exc)
        return next_in
