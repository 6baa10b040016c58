"""Beat's scheduler: the schedule in memory, every entry due as soon as beat starts."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import redis
from celery.beat import Scheduler

from predictions.clock import process_clock
from predictions.heartbeat import write_beat_tick
from predictions.redis_client import make_redis

log = logging.getLogger(__name__)


class WarmStartScheduler(Scheduler):  # type: ignore[misc]
    """Celery's in-memory Scheduler, but refreshing at start-up.

    Celery's schedulers first run an interval entry one interval after start, so a fresh
    system (or a beat restarted after an outage) would leave the cache cold that long.
    The tasks expire after one interval and run nothing twice, so persisting the
    schedule to a file would buy nothing.
    """

    def setup_schedule(self) -> None:
        super().setup_schedule()
        long_ago = self.app.now() - timedelta(days=1)
        for entry in self.schedule.values():
            entry.last_run_at = long_ago

    def tick(self, *args: Any, **kwargs: Any) -> float:
        """Run due entries, then leave the time of this tick in Redis for /metrics."""
        next_in: float = super().tick(*args, **kwargs)
        settings = self.app.settings
        try:
            if not hasattr(self, "_heartbeat_redis"):
                self._heartbeat_redis = make_redis(settings, client_name="prediction-cache-beat")
                self._clock = process_clock(self._heartbeat_redis)
            write_beat_tick(
                self._heartbeat_redis, self._clock(), 10 * settings.refresh_interval_seconds
            )
        except redis.RedisError as exc:  # the schedule goes on without its heartbeat
            log.warning("could not record beat's tick: %r", exc)
        return next_in
