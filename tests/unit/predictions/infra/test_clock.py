"""RedisClock: every process's instants by Redis's clock, whatever its host's says."""

from __future__ import annotations

import ast
import logging
from pathlib import Path

import fakeredis
import pytest
import redis

from predictions.infra.clock import RedisClock
from worker.refresh import claim_refresh_slot


class RedisTime:
    """A Redis that answers TIME with a given instant (or fails), counting the calls."""

    def __init__(self, now: float) -> None:
        self.now = now
        self.calls = 0
        self.down = False

    def time(self) -> tuple[int, int]:
        self.calls += 1
        if self.down:
            raise redis.ConnectionError("down")
        return int(self.now), int(round(self.now % 1 * 1e6))


class Ticking:
    """A host clock that advances ``step`` seconds on each reading."""

    def __init__(self, start: float, step: float = 0.0) -> None:
        self.value = start
        self.step = step

    def __call__(self) -> float:
        value = self.value
        self.value += self.step
        return value


def make(server: RedisTime, local: Ticking, monotonic: Ticking | None = None) -> RedisClock:
    return RedisClock(
        server,  # type: ignore[arg-type]
        local=local,
        host_monotonic=monotonic or Ticking(0.0),
        background=False,
    )


def test_offset_is_redis_time_minus_the_round_trips_midpoint() -> None:
    server = RedisTime(1020.1)
    clock = make(server, Ticking(1000.0, step=0.2))  # sent 1000.0, received 1000.2
    assert clock.measure() == pytest.approx(20.0)
    assert clock.offset == pytest.approx(20.0)


@pytest.mark.parametrize("skew", [20.0, -20.0, 0.0])
def test_hosts_with_skewed_clocks_agree_on_every_instant(skew: float) -> None:
    server = RedisTime(5000.0)
    clock = make(server, Ticking(5000.0 - skew))
    assert clock.now() == pytest.approx(5000.0, abs=1e-6)


def test_two_skewed_hosts_claim_the_same_refresh_slot() -> None:
    client = fakeredis.FakeRedis()
    server = RedisTime(6001.0)
    ahead, behind = make(server, Ticking(6021.0)), make(server, Ticking(5981.0))
    assert claim_refresh_slot(client, 20.0, ahead.now())
    assert not claim_refresh_slot(client, 20.0, behind.now())


def test_measured_at_start_and_then_once_per_interval() -> None:
    server = RedisTime(100.0)
    monotonic = Ticking(0.0)
    clock = make(server, Ticking(100.0), monotonic)
    clock.now()
    clock.now()
    assert server.calls == 1
    monotonic.value = clock.interval_seconds + 1
    clock.now()
    assert server.calls == 2


def test_redis_away_keeps_the_last_offset_and_tries_once_a_second() -> None:
    server = RedisTime(110.0)
    monotonic = Ticking(0.0)
    clock = make(server, Ticking(100.0), monotonic)
    clock.now()
    server.down = True
    monotonic.value = clock.interval_seconds + 1
    for _ in range(5):
        assert clock.now() == pytest.approx(110.0)
    assert server.calls == 2  # one failed attempt, not one per reading
    monotonic.value += 1.5
    clock.now()
    assert server.calls == 3


def test_a_slow_round_trip_measures_nothing() -> None:
    clock = make(RedisTime(130.0), Ticking(100.0, step=1.0))
    assert clock.measure() is None and clock.offset == 0.0


def test_an_offset_past_a_second_is_logged_once_and_exported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    exported: list[float] = []
    clock = make(RedisTime(120.0), Ticking(100.0))
    clock.on_offset = exported.append
    with caplog.at_level(logging.WARNING, logger="predictions.infra.clock"):
        clock.measure()
        clock.measure()
    assert [r.message for r in caplog.records if "behind Redis" in r.message] != []
    assert len(caplog.records) == 1
    assert exported == [pytest.approx(20.0)] * 2


def test_a_small_offset_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    clock = make(RedisTime(100.5), Ticking(100.0))
    with caplog.at_level(logging.WARNING, logger="predictions.infra.clock"):
        clock.measure()
    assert not caplog.records


def test_a_due_measurement_runs_in_the_background() -> None:
    server = RedisTime(100.0)
    monotonic = Ticking(0.0)
    clock = RedisClock(server, local=Ticking(90.0), host_monotonic=monotonic)  # type: ignore[arg-type]
    clock.measure()
    monotonic.value = clock.interval_seconds + 1
    clock.now()
    assert clock._lock.acquire(timeout=5)  # the background measurement finished
    clock._lock.release()
    assert server.calls == 2
    assert clock.now() == pytest.approx(100.0)


def test_an_offset_within_the_round_trips_uncertainty_changes_nothing() -> None:
    # Sent at 100.0, received at 100.02: Redis's 100.015 is within 10 ms of the
    # midpoint, so zero (the clocks agree) stands; 100.05 is not.
    clock = make(RedisTime(100.015), Ticking(100.0, step=0.02))
    assert clock.measure() == 0.0
    clock = make(RedisTime(100.05), Ticking(100.0, step=0.02))
    assert clock.measure() == pytest.approx(0.04)


CLOCK_READERS = {"time", "monotonic", "time_ns", "monotonic_ns"}


def test_no_core_module_but_the_clock_reads_the_hosts_clock() -> None:
    # One clock: every instant and interval in the core comes from a Clock.
    core = Path(__file__).resolve().parents[4] / "predictions"
    readers = []
    for path in sorted(core.rglob("*.py")):
        if path == core / "infra" / "clock.py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        # What the time module is called here (import time, import time as t).
        names = {
            alias.asname or alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
            if alias.name == "time"
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in names
                and node.attr in CLOCK_READERS
            ) or (
                isinstance(node, ast.ImportFrom)
                and node.module == "time"
                and {a.name for a in node.names} & CLOCK_READERS
            ):
                readers.append(f"{path.relative_to(core.parent)}:{node.lineno}")
    assert readers == []
