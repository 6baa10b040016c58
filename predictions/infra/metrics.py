"""Every Prometheus metric of the service, defined in one place.

The API (gunicorn) and the worker (Celery's prefork pool) each run several processes,
so both use prometheus-client's multiprocess mode: each process writes its values to
files under PROMETHEUS_MULTIPROC_DIR, and the endpoint adds them up. That variable must
be set before prometheus_client is first imported: predictions.infra.multiprocess does it,
called first thing by gunicorn.conf.py and worker/__init__.py. Without it (unit tests,
one process) the metrics live in the process as usual.

Per-pair freshness as Redis holds it (time since the last successful refresh) and
beat's last tick are read from Redis when /metrics is scraped (``FreshnessCollector``):
they are facts about the shared cache, not about any one process.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.registry import Collector

from predictions.infra.multiprocess import MULTIPROC_ENV

CONTENT_TYPE = CONTENT_TYPE_LATEST
# Decided once, as prometheus_client decides where values live when first imported (by
# this module): a directory set later (a test importing the worker) changes nothing.
MULTIPROCESS_DIR = os.environ.get(MULTIPROC_ENV) or None

# From a near-cache hit (~50 µs) to a miss that waits for the model (~1 s and more).
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
COMPUTE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)

# The API's answers to GET /predict/<pair>, by outcome: the values of
# predictions.cache.Outcome (hit, stale, miss_computed, miss_waited, miss_failed,
# rejected).
REQUESTS = Counter("prediction_requests", "GET /predict/<pair> answers, by outcome.", ["outcome"])
REQUEST_SECONDS = Histogram(
    "prediction_request_duration_seconds",
    "Time the API spent on GET /predict/<pair>, by outcome.",
    ["outcome"],
    buckets=LATENCY_BUCKETS,
)
# Ages up to a default TTL (60 s) are fresh; past it, up to its grace (60 s more), stale.
AGE_BUCKETS = (1.0, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 75.0, 90.0, 120.0, 180.0, 300.0)
# Not labelled by pair: with thousands of pairs, a series per pair per process would
# cost each API process about a kilobyte a pair. Per-pair ages are read from Redis at
# scrape time instead (prediction_age_seconds{pair}, FreshnessCollector).
SERVED_AGE = Histogram(
    "prediction_served_age_seconds",
    "Age (now - computed_at) of the predictions served, fresh or stale.",
    buckets=AGE_BUCKETS,
)
COMPUTATIONS = Counter(
    "prediction_computations",
    "Model computations in this server's processes, by result (ok, failed).",
    ["result"],
)
COMPUTE_SECONDS = Histogram(
    "prediction_compute_duration_seconds",
    "Time a model computation took, market data included.",
    buckets=COMPUTE_BUCKETS,
)
REVALIDATIONS = Counter(
    "prediction_revalidations",
    "Background recomputations started by the API, by reason (stale, early) and "
    "result (ok, failed, skipped: someone else had it or it was already done).",
    ["reason", "result"],
)
LOCK_WAITS = Counter(
    "prediction_lock_waits",
    "Requests that waited for another request's or process's computation of a pair.",
)
LOCK_WAIT_SECONDS = Histogram(
    "prediction_lock_wait_duration_seconds",
    "How long requests waited for another's computation.",
    buckets=LATENCY_BUCKETS,
)
REDIS_ERRORS = Counter(
    "prediction_redis_errors",
    "Redis connection errors and timeouts seen by the API.",
)
CLOCK_OFFSET = Gauge(
    "prediction_clock_offset_seconds",
    "Redis's clock minus this host's, as last measured (instants follow Redis's).",
    multiprocess_mode="mostrecent",
)
CIRCUIT_OPEN = Gauge(
    "prediction_circuit_open",
    "1 while an API process skips Redis after repeated failures (the highest of all).",
    multiprocess_mode="livemax",
)
REFRESHES = Counter(
    "prediction_refreshed_pairs",
    "Pairs handled by the worker's refreshes, by result (written, failed, skipped).",
    ["result"],
)
REFRESH_SECONDS = Histogram(
    "prediction_refresh_duration_seconds",
    "Time one refresh task took (a batch of pairs).",
    buckets=COMPUTE_BUCKETS,
)


# A dead process's values are folded into these files, one per kind, so that the
# directory holds the live processes' files plus these, however many workers gunicorn
# recycles (max_requests), and totals stay exact. prometheus-client parses a file's
# kind (and a gauge's mode) from its name and ignores the rest for counters and
# histograms; for a "mostrecent" gauge the pid part is a label it drops when merging.
ARCHIVE = "archive"
# Summed: counters, histograms, summaries and "sum" gauges. Others, by mode, below.
_SUMMED = ("counter", "histogram", "summary", "gauge_sum")
_COMBINED: dict[str, Callable[[float, float, float, float], tuple[float, float]]] = {
    "gauge_max": lambda old, old_ts, new, ts: (max(old, new), max(old_ts, ts)),
    "gauge_min": lambda old, old_ts, new, ts: (min(old, new), max(old_ts, ts)),
    "gauge_mostrecent": lambda old, old_ts, new, ts: (new, ts) if ts >= old_ts else (old, old_ts),
}
_LOCK_FILE = ".compaction.lock"  # not *.db: the collector never reads it


@contextlib.contextmanager
def _directory_lock(directory: str, exclusive: bool) -> Iterator[None]:
    """Scrapes (shared) never see a dead process's values both archived and not."""
    with open(os.path.join(directory, _LOCK_FILE), "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def mark_process_dead(pid: int) -> None:
    """A process is gone: drop its live gauges, fold the rest into the archive files.

    Without the fold every recycled gunicorn worker left its files behind, so the
    directory (and each scrape's work) grew without bound under sustained load.
    """
    if MULTIPROCESS_DIR is None:
        return
    multiprocess.mark_process_dead(pid, MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]
    with _directory_lock(MULTIPROCESS_DIR, exclusive=True):
        for path in glob.glob(os.path.join(MULTIPROCESS_DIR, f"*_{pid}.db")):
            kind = os.path.basename(path)[: -len(f"_{pid}.db")]
            if kind in _SUMMED or kind in _COMBINED:
                _fold(path, os.path.join(MULTIPROCESS_DIR, f"{kind}_{ARCHIVE}.db"), kind)
            # gauge_all (one sample per pid): a dead process's samples are dropped.
            os.unlink(path)


def _fold(source: str, archive: str, kind: str) -> None:
    # prometheus-client's own file format, through its own (untyped) reader and writer.
    into: Any = MmapedDict(archive)  # type: ignore[no-untyped-call]
    values: Any = MmapedDict.read_all_values_from_file(source)  # type: ignore[no-untyped-call]
    try:
        for key, value, timestamp, _pos in values:
            old, old_ts = into.read_value(key)
            if kind in _SUMMED:
                into.write_value(key, old + value, max(old_ts, timestamp))
            else:
                into.write_value(key, *_COMBINED[kind](old, old_ts, value, timestamp))
    finally:
        into.close()


class _LockedCollector(multiprocess.MultiProcessCollector):
    """prometheus-client's collector, reading under the directory's shared lock."""

    def collect(self) -> Iterator[Any]:
        with _directory_lock(self._path, exclusive=False):
            return iter(list(super().collect()))  # type: ignore[no-untyped-call]


def registry() -> CollectorRegistry:
    """The registry to expose: every process's values in multiprocess mode."""
    if MULTIPROCESS_DIR is None:
        return REGISTRY
    combined = CollectorRegistry()
    _LockedCollector(combined, MULTIPROCESS_DIR)  # type: ignore[no-untyped-call]
    return combined


def exposition(*extra: Collector) -> bytes:
    """The text format of every metric, plus collectors read at scrape time."""
    text = generate_latest(registry())
    if extra:
        scraped = CollectorRegistry(auto_describe=False)
        for collector in extra:
            scraped.register(collector)
        text += generate_latest(scraped)
    return text


class FreshnessCollector(Collector):
    """Freshness of the stored predictions and beat's last tick, read at scrape.

    ``read`` returns every known pair's count by state (fresh, stale, missing), the
    worst pairs, worst first, with the computed_at of their stored prediction (None if
    none), and the time of beat's last tick (None if unknown). Per-pair series are
    exported for those worst pairs only (at most METRICS_MAX_PAIR_SERIES), so that a
    scrape stays bounded however many pairs are known. If Redis cannot be read, these
    gauges are absent.
    """

    def __init__(
        self,
        read: Callable[
            [], tuple[Mapping[str, int], Sequence[tuple[str, float | None]], float | None]
        ],
        clock: Callable[[], float],
    ) -> None:
        self.read = read
        self.clock = clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            counts, worst, last_tick = self.read()
        except Exception:  # a scrape must not fail on a Redis outage
            return
        now = self.clock()
        by_state = GaugeMetricFamily(
            "prediction_pairs",
            "Known pairs by the state of their stored prediction: fresh, stale (within "
            "grace) or missing.",
            labels=["state"],
        )
        for state, count in counts.items():
            by_state.add_metric([state], count)
        yield by_state
        age = GaugeMetricFamily(
            "prediction_age_seconds",
            "Time since the pair's stored prediction was computed (its last successful "
            "refresh); absent while nothing is stored. Only the oldest pairs (see "
            "METRICS_MAX_PAIR_SERIES).",
            labels=["pair"],
        )
        stored = GaugeMetricFamily(
            "prediction_stored",
            "1 if Redis holds a prediction for the pair (fresh or within grace). Only "
            "the missing and oldest pairs (see METRICS_MAX_PAIR_SERIES).",
            labels=["pair"],
        )
        for pair, computed_at in worst:
            stored.add_metric([pair], 0.0 if computed_at is None else 1.0)
            if computed_at is not None:
                age.add_metric([pair], max(0.0, now - computed_at))
        yield age
        yield stored
        if last_tick is not None:
            yield GaugeMetricFamily(
                "prediction_beat_last_tick_timestamp_seconds",
                "Unix time of celery beat's last tick, as beat wrote it to Redis.",
                value=last_tick,
            )
