"""Beat's scheduler: the schedule in memory, every entry due as soon as beat starts."""

from __future__ import annotations

from datetime import timedelta

from celery.beat import Scheduler


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
