"""Thin Celery tasks: arguments, retries and fan-out; the work is in worker.refresh."""

from __future__ import annotations

import functools
import logging

import redis
from celery import Task, shared_task

from beat_schedule import skew_tolerant_expiry
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
def refresh_all_predictions(self: RefreshTask, not_after: float | None = None) -> int:
    """Fan out: one refresh_predictions task per batch of configured pairs."""
    settings = self.app.settings
    interval = settings.refresh_interval_seconds
    now = self.resources.clock()  # Redis's time: every worker counts the same slots
    if not_after is not None and now > not_after:
        # Sent by beat for an interval gone by (a backlog after an outage): the next
        # one is due, or already here. Deadlines are by Redis's clock, beat's and ours.
        log.info("refresh dropped: sent for an interval gone by")
        return 0
    if not claim_refresh_slot(self.resources.store.redis, interval, now):
        log.warning("refresh skipped: this interval was already refreshed (two beats?)")
        return 0
    chunks = batches(settings.pairs, settings.refresh_batch_size, settings.worker_concurrency)
    for chunk in chunks:
        # A batch not started by the next tick is dropped: by Redis's clock, read by
        # the sender here and the receiver there (not_after), since hosts' clocks may
        # disagree. Celery's own expiry compares two hosts' clocks, so it only stops
        # messages far older than any skew.
        refresh_predictions.apply_async(
            args=[list(chunk)],
            kwargs={"not_after": now + interval},
            expires=skew_tolerant_expiry(interval),
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
def refresh_predictions(self: RefreshTask, pairs: list[str], not_after: float | None = None) -> int:
    """Recompute and store the given pairs; returns how many were written."""
    settings = self.app.settings
    if not_after is not None and self.resources.clock() > not_after:
        log.info("refresh dropped: sent for an interval gone by pairs=%d", len(pairs))
        return 0
    return refresh_pairs(
        pairs,
        self.resources,
        settings.compute_timeout_seconds,
        settings.refresh_interval_seconds,
    )
