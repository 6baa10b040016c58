"""Revalidation: background recomputation in the API process, one per pair at a time.

("Refresh" is the worker's periodic recomputation; "revalidate" is the API's.) A
request that finds a stale prediction (or a fresh one that XFetch picks for early
revalidation) answers at once and hands the pair to a BackgroundRevalidator. Within a
process, a pair already queued or running is not queued again; across processes and
hosts, the revalidation itself takes the pair's compute lock in Redis (the same lock as
the miss path and the worker), so exactly one computation runs. After a computation
fails, the pair rests for ``backoff_seconds``: its stale prediction is served, and the
model is not asked again on every request (stale-if-error).

No Celery here: the API must not import it, and a thread next to the request needs no
broker round trip.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from predictions.infra.clock import Clock

log = logging.getLogger(__name__)


def revalidate_early(
    remaining_seconds: float, delta_seconds: float, beta: float, draw: float
) -> bool:
    """XFetch (Vattani, Chierichetti and Lowenstein, VLDB 2015): recompute now, early?

    True with probability exp(-remaining / (delta * beta)) for ``draw`` uniform in
    (0, 1]: -log(draw) is exponentially distributed, so this is the paper's test
    ``now - delta * beta * log(draw) >= expiry``. A draw in (0, 1] keeps log(0) out.
    """
    if beta <= 0 or delta_seconds <= 0:
        return False
    return -delta_seconds * beta * math.log(draw) >= remaining_seconds


class BackgroundRevalidator:
    """Runs ``revalidate(pair)`` on a few threads, once per pair at a time."""

    def __init__(
        self,
        threads: int,
        backoff_seconds: float,
        clock: Clock,
    ) -> None:
        self.threads = threads
        self.backoff_seconds = backoff_seconds
        self.clock = clock
        self._lock = threading.Condition()  # notified when a revalidation ends
        self._pending: set[str] = set()
        self._resting: dict[str, float] = {}  # pair -> monotonic time its rest ends
        # Made on first use: after gunicorn forks its workers, never in the master.
        self._executor: ThreadPoolExecutor | None = None

    def submit(self, pair: str, revalidate: Callable[[str], object]) -> bool:
        """Queue a revalidation of ``pair`` unless one is pending or the pair is resting."""
        with self._lock:
            if pair in self._pending or self.resting(pair):
                return False
            self._pending.add(pair)
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self.threads, "prediction-revalidate")
            executor = self._executor
        try:
            executor.submit(self._run, pair, revalidate)
        except RuntimeError:  # shutting down
            self._done(pair)
            return False
        return True

    def resting(self, pair: str) -> bool:
        """True if the pair's last computation failed less than backoff_seconds ago."""
        until = self._resting.get(pair)
        return until is not None and self.clock.monotonic() < until

    def failed(self, pair: str) -> None:
        """Rest the pair: its computation just failed."""
        self._resting[pair] = self.clock.monotonic() + self.backoff_seconds

    def succeeded(self, pair: str) -> None:
        self._resting.pop(pair, None)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no revalidation is pending (for tests and shutdown); True if idle."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._pending, timeout)

    def _run(self, pair: str, revalidate: Callable[[str], object]) -> None:
        try:
            revalidate(pair)
        except Exception:  # a thread has no caller to raise to: log it, and rest
            log.exception("background revalidation failed pair=%s", pair, extra={"pair": pair})
            self.failed(pair)
        finally:
            self._done(pair)

    def _done(self, pair: str) -> None:
        with self._lock:
            self._pending.discard(pair)
            self._lock.notify_all()
