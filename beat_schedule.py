"""Celery beat's schedule: which task runs how often. Task names only, no logic."""

from __future__ import annotations

from typing import Any

REFRESH_ALL_TASK = "predictions.refresh_all"
REFRESH_BATCH_TASK = "predictions.refresh_batch"
# How far apart two hosts' clocks may be before Celery drops a due task as expired.
# Celery stamps an absolute expiry by the sender's clock and checks it by the
# receiver's, so an expiry of one interval would drop every task at a worker whose
# clock runs an interval ahead.
CLOCK_SKEW_ALLOWANCE_SECONDS = 300.0


def skew_tolerant_expiry(interval_seconds: float) -> float:
    """Celery's ``expires`` for a task due every interval, whatever the hosts' clocks."""
    return interval_seconds + CLOCK_SKEW_ALLOWANCE_SECONDS


def build_schedule(refresh_interval_seconds: float) -> dict[str, dict[str, Any]]:
    """One refresh of every configured pair per interval.

    A refresh that could not start in time (workers down, broker backlog) is not
    replayed: each run claims its interval's slot by Redis's clock, so a backlog of
    them refreshes once, now. Celery's ``expires`` only drops a backlog older than
    any plausible clock skew (see skew_tolerant_expiry).
    """
    return {
        "refresh-all-predictions": {
            "task": REFRESH_ALL_TASK,
            "schedule": refresh_interval_seconds,
            "options": {"expires": skew_tolerant_expiry(refresh_interval_seconds)},
        }
    }
