"""Thin Celery tasks: arguments, retries and fan-out; the work is in worker.refresh."""

from __future__ import annotations

import functools
import logging

import redis
from celery import Task, shared_task

from beat_schedule import REFRESH_ALL_TASK, REFRESH_BATCH_TASK, skew_tolerant_expiry
from predictions.settings import Settings
from predictions.wiring import Wiring, wire
from worker import refresh

log = logging.getLogger(__name__)

TRANSIENT_ERRORS = (redis.ConnectionError, redis.TimeoutError)
# refresh_batch's name in 0.1.0: a worker of that release, during a rolling upgrade,
# still fans out to it (and the broker may hold such messages). Accepted in 0.2.x,
# removed in 0.3.0 (docs/operations.md, "Task names and rolling upgrades").
DEPRECATED_REFRESH_BATCH_TASK = "predictions.refresh_pairs"
# One batch's retry policy, shared by the task and its deprecated name.
BATCH_RETRIES = {
    "autoretry_for": TRANSIENT_ERRORS,
    "max_retries": 3,
    "retry_backoff": 1,
    "retry_backoff_max": 5,
}


@functools.cache
def process_wiring(settings: Settings) -> Wiring:
    """The Redis client, clock, predictor and store, built once per worker process (on
    its first task, after the fork), and shared by every task that process runs."""
    wiring = wire(settings, role="worker")
    try:
        wiring.known.seed()
    except redis.RedisError as exc:  # the task that asked will fail and be retried
        log.warning("cannot read the pair registry yet: %r", exc)
    return wiring


class RefreshTask(Task):  # type: ignore[misc]
    @property
    def wiring(self) -> Wiring:
        return process_wiring(self.app.settings)


@shared_task(name=REFRESH_ALL_TASK, base=RefreshTask, bind=True)
def refresh_all(
    self: RefreshTask, not_after: float | None = None, interval: float | None = None
) -> int:
    """Fan out: one refresh_batch task per batch of the known pairs refreshed every
    ``interval`` (by default REFRESH_INTERVAL_SECONDS), once per interval.

    The refresh slot is what stops a duplicate refresh: the first refresh_all of an
    interval (by Redis's clock) claims it, and any other (a second beat, a backlog
    replayed after an outage) does nothing. ``not_after`` and Celery's ``expires``
    are backstops that drop a message of an interval gone by before it reaches Redis.
    """
    settings = self.app.settings
    interval = interval or settings.refresh_interval_seconds
    now = self.wiring.clock.now()  # Redis's time: every worker counts the same slots
    if not_after is not None and now > not_after:
        # Sent by beat for an interval gone by (a backlog after an outage): the next
        # one is due, or already here. Deadlines are by Redis's clock, beat's and ours.
        log.info("refresh dropped: sent for an interval gone by")
        return 0
    if not refresh.claim_refresh_slot(self.wiring.redis, interval, now):
        log.warning("refresh skipped: this interval was already refreshed (two beats?)")
        return 0
    chunks = refresh.batches(
        refresh.due_pairs(self.wiring, interval, now),
        settings.refresh_batch_size,
        settings.worker_concurrency,
    )
    for chunk in chunks:
        # A batch not started by the next tick is dropped: by Redis's clock, read by
        # the sender here and the receiver there (not_after), since hosts' clocks may
        # disagree. Celery's own expiry compares two hosts' clocks, so it only stops
        # messages far older than any skew.
        refresh_batch.apply_async(
            args=[list(chunk)],
            kwargs={"not_after": now + interval},
            expires=skew_tolerant_expiry(interval),
        )
    return len(chunks)


@shared_task(name=REFRESH_BATCH_TASK, base=RefreshTask, bind=True, **BATCH_RETRIES)
def refresh_batch(self: RefreshTask, pairs: list[str], not_after: float | None = None) -> int:
    """Recompute and store the given pairs; returns how many were written."""
    if not_after is not None and self.wiring.clock.now() > not_after:
        log.info("refresh dropped: sent for an interval gone by pairs=%d", len(pairs))
        return 0
    return refresh.refresh_batch(pairs, self.wiring)


@shared_task(name=DEPRECATED_REFRESH_BATCH_TASK, base=RefreshTask, bind=True, **BATCH_RETRIES)
def refresh_batch_deprecated_name(
    self: RefreshTask, pairs: list[str], not_after: float | None = None
) -> int:
    """refresh_batch under its old name (see DEPRECATED_REFRESH_BATCH_TASK)."""
    return int(refresh_batch.run(pairs, not_after))
