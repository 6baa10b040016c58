"""The one clock of the core: Redis's time for instants, this host's monotonic time
for intervals.

No other module of the core reads the host's clock: every class that needs the time
takes a Clock (a RedisClock in every process; tests pass a clock of their own), and
a unit test holds the core to that.

Every instant the service stores or compares across processes (computed_at,
fresh_until, the absolute expiries of predictions and locks, the refresh slot, beat's
tick) is taken from a RedisClock: this host's time.time() plus its measured offset
from the Redis server's TIME. Hosts whose clocks disagree therefore still agree on
every instant, and Redis, which expires keys by its own clock, agrees with them.

Hand-rolled, and small: no library measures an offset against Redis. The offset is
measured at start, then every ``interval_seconds`` in a short-lived background thread
(one Redis round trip, bounded by the client's timeouts), so that no reading, and no
request, ever waits for Redis; between measurements, and while Redis is away, the
last offset holds, since clocks drift by milliseconds per hour.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

import redis

log = logging.getLogger(__name__)

# Past this, the host's clock is worth fixing (NTP), and it is logged: the service
# stays correct, but a client comparing our instants with its own clock would not.
WARN_OFFSET_SECONDS = 1.0
# A measurement whose round trip took longer than this says little about the offset.
MAX_ROUND_TRIP_SECONDS = 0.25


class Clock(Protocol):
    """Where the core gets the time."""

    def now(self) -> float:
        """Unix time by Redis's clock: every instant stored or compared across hosts."""
        ...

    def monotonic(self) -> float:
        """Seconds that never go back: deadlines, back-offs and ages within a process.
        Waits sleep in real time, so this must advance in real time where they run."""
        ...


class RedisClock:
    """The host's time.time(), corrected to the Redis server's clock; and its monotonic
    time, as is."""

    def __init__(
        self,
        client: redis.Redis,
        interval_seconds: float = 30.0,
        local: Callable[[], float] = time.time,
        host_monotonic: Callable[[], float] = time.monotonic,
        on_offset: Callable[[float], None] | None = None,
        background: bool = True,
    ) -> None:
        self.client = client
        self.interval_seconds = interval_seconds
        self.local = local
        self._host_monotonic = host_monotonic
        self.on_offset = on_offset
        self.background = background
        self.offset = 0.0
        self.measured = False
        self._due = 0.0  # monotonic time of the next measurement
        self._lock = threading.Lock()

    def monotonic(self) -> float:
        return self._host_monotonic()

    def now(self) -> float:
        if self.monotonic() >= self._due and self._lock.acquire(blocking=False):
            if self.background:
                # Started where it is due, so it runs in whichever process reads the
                # clock (a thread started before a fork would not exist after it).
                self._due = self.monotonic() + 1.0
                threading.Thread(target=self._measure_once, daemon=True).start()
            else:
                self._measure_once()
        return self.local() + self.offset

    def _measure_once(self) -> None:
        try:
            self.measure()
        finally:
            self._lock.release()

    def measure(self) -> float | None:
        """Measure the offset from Redis now; None (the old offset kept) if it fails."""
        # A failed attempt is retried a second later, not by every caller at once:
        # Redis away must not cost each reading a timeout.
        self._due = self.monotonic() + 1.0
        try:
            sent = self.local()
            seconds, microseconds = self.client.time()
            received = self.local()
        except redis.RedisError as exc:
            log.debug("clock offset not measured: %r", exc)
            return None
        round_trip = received - sent
        if round_trip > MAX_ROUND_TRIP_SECONDS:
            return None
        # Redis read its clock somewhere in the round trip: the offset is the midpoint's,
        # give or take half the round trip. An offset within that of the one in use (at
        # first, zero) is no news: keeping it keeps one host's instants, and Redis's,
        # exactly in step rather than jittering by a few milliseconds.
        offset = seconds + microseconds / 1e6 - (sent + received) / 2
        if abs(offset - self.offset) <= round_trip / 2:
            offset = self.offset
        if abs(offset) > WARN_OFFSET_SECONDS and (
            not self.measured or abs(self.offset) <= WARN_OFFSET_SECONDS
        ):
            log.warning(
                "this host's clock is %.3f s %s Redis's: instants follow Redis's clock; "
                "fix the host's time (NTP)",
                abs(offset),
                "behind" if offset > 0 else "ahead of",
                extra={"clock_offset_seconds": round(offset, 3)},
            )
        self.offset = offset
        self._due = self.monotonic() + self.interval_seconds
        self.measured = True
        if self.on_offset is not None:
            self.on_offset(offset)
        return offset


def process_clock(client: redis.Redis) -> RedisClock:
    """This process's clock: measured now (if Redis answers), exported as a gauge."""
    # Imported here: gunicorn.conf.py and worker/__init__.py import this package
    # before prometheus_client may be imported (see predictions.infra.multiprocess).
    from predictions.infra import metrics

    clock = RedisClock(client, on_offset=metrics.CLOCK_OFFSET.set)
    clock.measure()
    return clock
