"""The refresh: the worker's scheduled recomputation of every pair, free of Celery so
that tests can call it directly."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence

import redis

from predictions.cache import locks
from predictions.infra import InvalidPair, canonical_pair, keys, metrics
from predictions.model import LoadedModel, ModelLoadError, read_active
from predictions.registry import forget_unasked, recently_asked
from predictions.wiring import Wiring

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Tally:
    """What a refresh did with its pairs."""

    written: int = 0
    failed: int = 0
    skipped: int = 0


def batches(pairs: Sequence[str], batch_size: int, min_batches: int) -> list[tuple[str, ...]]:
    """Split pairs into batches of at most batch_size, and at least min_batches of them
    (when there are that many pairs), so that every pool process gets work."""
    if not pairs:
        return []
    count = min(len(pairs), max(math.ceil(len(pairs) / batch_size), min_batches))
    size = math.ceil(len(pairs) / count)
    return [tuple(pairs[i : i + size]) for i in range(0, len(pairs), size)]


def claim_refresh_slot(client: redis.Redis, interval_seconds: float, now: float) -> bool:
    """Claim this refresh interval for the caller; False if a refresh already has it.

    Intervals are counted from the Unix epoch, so every beat (even two started by
    mistake, out of phase) agrees on them: one fan-out per interval, whoever sends it.
    """
    slot = int(now // interval_seconds)
    # Kept for two intervals: long enough to outlive the slot, then gone on its own.
    ttl_ms = max(1, int(2 * interval_seconds * 1000))
    key = keys.refresh_slot_key(slot, interval_seconds)
    return bool(client.set(key, b"1", nx=True, px=ttl_ms))


def due_pairs(wiring: Wiring, interval_seconds: float, now: float) -> list[str]:
    """The known pairs refreshed every ``interval_seconds``; under PRECOMPUTE=asked,
    only those clients asked for lately (see predictions.registry.asked)."""
    if wiring.settings.precompute == "off":
        return []
    known = wiring.known
    known.reload_if_changed()
    pairs = known.by_refresh_interval().get(interval_seconds, [])
    if wiring.settings.precompute == "asked":
        return recently_asked(wiring.redis, now, pairs, known)
    forget_unasked(wiring.redis, now, known)  # recorded all the same: kept bounded
    return pairs


def refresh_batch(pairs: Sequence[str], wiring: Wiring) -> int:
    """Compute each pair and store the results, a group at a time; return how many
    were written.

    A pair whose compute lock is held (an API request or another refresh is computing
    it) is skipped: its prediction is on its way. A pair whose model fails is logged
    and skipped: its previous prediction stays until it expires, and the other pairs
    are still refreshed. A task message may carry anything, so pairs that are not
    known (now: one removed since the message was sent) are ignored.
    """
    started = time.perf_counter()
    settings = wiring.settings
    wiring.known.reload_if_changed()
    wanted = _known(pairs, wiring.known.pairs)
    try:
        served = served_model(wiring, settings.refresh_interval_seconds)
    except ModelLoadError as exc:
        log.error("refresh failed: cannot build model error=%s", exc)
        metrics.REFRESHES.labels("failed").inc(len(wanted))
        return 0
    if served is None:
        log.warning("refresh skipped: the model is still loading pairs=%d", len(wanted))
        metrics.REFRESHES.labels("skipped").inc(len(wanted))
        return 0
    version, model = served
    plan = lock_plan(
        wiring.predictor.simulated_latency_seconds,
        settings.compute_timeout_seconds,
        settings.refresh_interval_seconds,
    )
    tally = refresh_in_groups(wanted, wiring, version, model, plan)
    _record(len(pairs), tally, time.perf_counter() - started)
    return tally.written


def served_model(wiring: Wiring, wait_seconds: float) -> tuple[str, LoadedModel] | None:
    """The version the API serves and its model; None while that model is loading.

    A rollout moves the version, and refreshes follow. A fresh cache gets this
    process's MODEL as its version. Models are built in the background, so a slow load
    never runs into the task's time limits: until it is there (waiting at most
    ``wait_seconds`` here), batches are skipped. ModelLoadError if it cannot be built.
    """
    client = wiring.redis
    catalog = wiring.predictor.models
    version = read_active(client)
    if version is None and catalog.default_if_ready(wait_seconds):
        version = catalog.activate_default_if_none(client)
    model = None if version is None else catalog.model_if_ready(client, version, wait_seconds)
    catalog.warn_if_default_inactive(version)
    if version is None or model is None:
        return None
    return version, model


def refresh_in_groups(
    pairs: Sequence[str],
    wiring: Wiring,
    version: str,
    model: LoadedModel,
    plan: tuple[int, float],
) -> Tally:
    """Lock, compute, store and unlock ``pairs`` a group at a time (see lock_plan)."""
    group_size, lock_seconds = plan
    client = wiring.redis
    tally = Tally()
    for first in range(0, len(pairs), group_size):
        group = pairs[first : first + group_size]
        tokens = locks.acquire_many(client, group, version, lock_seconds, wiring.clock.now())
        tally.skipped += len(group) - len(tokens)
        try:
            computed, failures = wiring.predictor.compute_many(list(tokens), model)
            tally.failed += len(failures)  # each already logged with its pair
            tally.written += wiring.store.write_many(computed, wiring.clock.now())
        finally:
            locks.release_many(client, tokens, version)
    return tally


def _record(asked: int, tally: Tally, seconds: float) -> None:
    """The refresh's metrics and its log line."""
    metrics.REFRESHES.labels("written").inc(tally.written)
    metrics.REFRESHES.labels("failed").inc(tally.failed)
    metrics.REFRESHES.labels("skipped").inc(tally.skipped)
    metrics.REFRESH_SECONDS.observe(seconds)
    log.info(
        "refreshed pairs=%d written=%d failed=%d skipped=%d seconds=%.3f",
        asked,
        tally.written,
        tally.failed,
        tally.skipped,
        seconds,
        extra={
            "pairs": asked,
            "written": tally.written,
            "failed": tally.failed,
            "skipped": tally.skipped,
            "duration_ms": round(seconds * 1000, 3),
        },
    )


def lock_plan(
    latency_seconds: float, compute_timeout_seconds: float, refresh_interval_seconds: float
) -> tuple[int, float]:
    """How many pairs to lock at once, and for how long.

    A group takes about half a refresh interval (and half the compute timeout) to
    compute, and its locks live twice that, plus a margin: long enough that none
    expires while its pair is computed, short enough that the locks of a refresh that
    died (a killed pool process) block the next refresh for less than an interval.
    """
    per_pair = latency_seconds + 0.005
    budget = min(compute_timeout_seconds, refresh_interval_seconds) / 2
    group_size = max(1, int(budget / per_pair))
    lock_seconds = min(compute_timeout_seconds, 2 * group_size * per_pair + 0.5)
    return group_size, lock_seconds


def _known(pairs: Sequence[str], known: frozenset[str]) -> list[str]:
    wanted: list[str] = []
    unknown = 0
    for text in pairs:
        try:
            pair = canonical_pair(str(text))
        except InvalidPair:
            pair = ""
        if pair not in known:
            unknown += 1
        elif pair not in wanted:
            wanted.append(pair)
    if unknown:
        # One line a batch, not one a pair: a removal can leave thousands in the queue.
        log.info("ignoring a refresh of pairs no longer known pairs=%d", unknown)
    return wanted
