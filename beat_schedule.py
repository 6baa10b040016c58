"""Celery beat's schedule: which task runs how often. Task names only, no logic."""

from __future__ import annotations

from typing import Any

REFRESH_ALL_TASK = "predictions.refresh_all"


def build_schedule(refresh_interval_seconds: float) -> dict[str, dict[str, Any]]:
    """One refresh of every configured pair per interval.

    ``expires`` equal to the interval: a refresh that could not start before the next
    one is due (workers down, broker backlog) is dropped instead of replayed.
    """
    return {
        "refresh-all-predictions": {
            "task": REFRESH_ALL_TASK,
            "schedule": refresh_interval_seconds,
            "options": {"expires": refresh_interval_seconds},
        }
    }
