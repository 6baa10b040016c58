"""SingleFlight: concurrent calls for one key share one call's outcome."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from predictions.cache.single_flight import FlightTimeout, SingleFlight


def test_concurrent_callers_of_one_key_share_one_call() -> None:
    flights: SingleFlight[int] = SingleFlight()
    gate, calls = threading.Event(), []

    def call() -> int:
        calls.append(1)
        gate.wait(5)
        return 42

    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(flights.do, "ETH-EUR", call, 5) for _ in range(8)]
        while len(flights) == 0 or len(calls) == 0:
            threading.Event().wait(0.001)
        threading.Event().wait(0.05)  # let the followers reach the flight
        gate.set()
        results = [future.result(5) for future in futures]
    assert calls == [1]
    assert {value for value, _ in results} == {42}
    assert sum(not shared for _, shared in results) == 1  # one leader, the rest shared
    assert len(flights) == 0  # nothing left behind


def test_the_leaders_exception_reaches_every_follower() -> None:
    flights: SingleFlight[int] = SingleFlight()
    gate = threading.Event()

    def call() -> int:
        gate.wait(5)
        raise ValueError("no prediction")

    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(flights.do, "ETH-EUR", call, 5) for _ in range(3)]
        threading.Event().wait(0.05)
        gate.set()
        for future in futures:
            with pytest.raises(ValueError, match="no prediction"):
                future.result(5)
    assert len(flights) == 0


def test_a_follower_gives_up_after_its_wait_and_the_leader_carries_on() -> None:
    flights: SingleFlight[str] = SingleFlight()
    gate = threading.Event()

    def call() -> str:
        gate.wait(5)
        return "done"

    with ThreadPoolExecutor(max_workers=2) as pool:
        leader = pool.submit(flights.do, "ETH-EUR", call, 5)
        while len(flights) == 0:
            threading.Event().wait(0.001)
        with pytest.raises(FlightTimeout, match="ETH-EUR"):
            flights.do("ETH-EUR", call, 0.05)
        gate.set()
        assert leader.result(5) == ("done", False)


def test_keys_fly_apart_and_in_turn() -> None:
    flights: SingleFlight[str] = SingleFlight()
    assert flights.do("ETH-EUR", lambda: "a", 1) == ("a", False)
    assert flights.do("ETH-EUR", lambda: "b", 1) == ("b", False)  # one after another: no sharing
    assert flights.do("BTC-EUR", lambda: "c", 1) == ("c", False)
