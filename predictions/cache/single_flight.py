"""SingleFlight: concurrent calls for one key in a process share one call's outcome.

Hand-written (a few lines, no maintained library offers it for both threads and
gevent): a burst of misses on one pair makes one request per process do the work
(take the Redis lock, or poll for someone else's result) while the rest wait on an
event, instead of each polling Redis.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class FlightTimeout(TimeoutError):
    """The call that others wait on took longer than they would wait."""


class _Flight(Generic[T]):
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: T | None = None
        self.error: BaseException | None = None


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[str, _Flight[T]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def do(self, key: str, call: Callable[[], T], wait_seconds: float) -> tuple[T, bool]:
        """``call()``'s result and False, or, if a call for ``key`` is already under
        way, its result (or its exception) and True; FlightTimeout after wait_seconds."""
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leader:
            if not flight.done.wait(wait_seconds):
                raise FlightTimeout(f"{key}: still under way after {wait_seconds:g} s")
            if flight.error is not None:
                raise flight.error
            return flight.result, True  # type: ignore[return-value]
        try:
            flight.result = call()
            return flight.result, False
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()
