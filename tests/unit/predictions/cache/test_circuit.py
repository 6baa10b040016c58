from __future__ import annotations

from predictions.cache.circuit import CircuitBreaker
from tests.harness.doubles import ManualClock


def test_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(threshold=3, open_seconds=2, clock=ManualClock())
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # the streak is broken
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.allow()


def test_half_open_lets_one_trial_through() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(threshold=1, open_seconds=2, clock=clock)
    breaker.record_failure()
    clock.seconds = 2.5
    assert breaker.state == "half-open"
    assert breaker.allow()
    assert not breaker.allow()  # the trial is running
    breaker.record_failure()  # the trial failed: open again
    assert breaker.state == "open" and not breaker.allow()
    clock.seconds = 5.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    assert breaker.allow() and breaker.allow()
