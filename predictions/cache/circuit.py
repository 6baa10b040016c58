"""CircuitBreaker: stop calling a Redis that keeps failing, and try again a bit later.

A dead Redis refuses connections at once, but a frozen one (SIGSTOP, a full network
buffer) makes every call wait for its socket timeout. After ``threshold`` failures in a
row the breaker opens: callers skip Redis for ``open_seconds``, so the outage costs one
timeout per interval rather than one per request. Then a single trial call is let
through (half-open); its success closes the breaker, its failure opens it again.

Hand-written rather than pybreaker: pybreaker holds its lock for the whole guarded call,
which would serialise every request thread of a gunicorn worker behind one Redis call.
Here the lock guards only the counters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from predictions.infra.clock import Clock


class CircuitBreaker:
    def __init__(
        self,
        threshold: int,
        open_seconds: float,
        clock: Clock,
        on_change: Callable[[bool], object] | None = None,
    ) -> None:
        self.threshold = threshold
        # Told True when the breaker opens, False when it closes again (for a gauge).
        self.on_change = on_change
        self.open_seconds = open_seconds
        self.clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._open_until = 0.0
        self._trial_running = False

    @property
    def state(self) -> str:
        """ "closed", "open" or "half-open" (a trial call is due or running)."""
        with self._lock:
            if self._failures < self.threshold:
                return "closed"
            return "open" if self.clock.monotonic() < self._open_until else "half-open"

    def allow(self) -> bool:
        """May the caller try Redis now? Every True must be followed by a record_*."""
        with self._lock:
            if self._failures < self.threshold:
                return True
            if self.clock.monotonic() < self._open_until or self._trial_running:
                return False
            self._trial_running = True
            return True

    def record_success(self) -> None:
        with self._lock:
            closing = self._failures >= self.threshold
            self._failures = 0
            self._trial_running = False
        if closing and self.on_change:
            self.on_change(False)

    def record_failure(self) -> None:
        with self._lock:
            self._failures += 1
            self._trial_running = False
            opening = self._failures == self.threshold
            if self._failures >= self.threshold:
                self._open_until = self.clock.monotonic() + self.open_seconds
        if opening and self.on_change:
            self.on_change(True)
