"""Thin Celery tasks: arguments, retries and fan-out; the work is in worker.refresh."""

from __future__ import annotations

import functools
import logging
import time

import redis
from celery import Task, shared_task

from predictions.settings import Settings
from worker.refresh import RefreshResources, batches, claim_refresh_slot, refresh_pairs

log = logging.getLogger(__name__)

TRANSIENT_ERRORS = (redis.ConnectionError, redis.TimeoutError)


@functools.cache
def process_resources(settings: Settings) -> RefreshResources:
    """The model and Redis client, built once per worker process (on its first task,
    after the fork), and shared by every task that process runs."""
    return RefreshResources.from_settings(settings)


class RefreshTask(Task):  # type: ignore[misc]
    @property
    def resources(self) -> RefreshResources:
        return process_resources(self.app.settings)


@shared_task(name="predictions.refresh_all", base=RefreshTask, bind=True)
def refresh_all_predictions(self: RefreshTask) -> int:
    """Fan out: one refresh_predictions task per batch of configured pairs."""
    settings = self.app.settings
    interval = settings.refresh_interval_seconds
    if not claim_refresh_slot(self.resources.store.redis, interval, time.time()):
        log.warning("refresh skipped: this interval was already refreshed (two beats?)")
        return 0
    chunks = batches(settings.pairs, settings.refresh_batch_size, settings.worker_concurrency)
    for chunk in chunks:
        # Same expiry as the beat entry: a batch not started by the next tick is dropped.
        refresh_predictions.apply_async(
            args=[list(chunk)], expires=settings.refresh_interval_seconds
        )
    return len(chunks)


@shared_task(
    name="predictions.refresh_pairs",
    base=RefreshTask,
    bind=True,
    autoretry_for=TRANSIENT_ERRORS,
    max_retries=3,
    retry_backoff=1,
    retry_backoff_max=5,
)
def refresh_predictions(self: RefreshTask, pairs: list[str]) -> int:
    """Recompute and store the given pairs; returns how many were written."""
    settings = self.app.settings
    return refresh_pairs(
        pairs,
        self.resources,
        settings.compute_timeout_seconds,
        settings.refresh_interval_seconds,
    )
