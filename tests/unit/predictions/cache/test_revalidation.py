"""Revalidation: XFetch's early draw, and the API's background recomputation, once per
pair at a time, resting a pair whose computation failed."""

from __future__ import annotations

import math
import threading

import pytest

from predictions.cache.revalidation import BackgroundRevalidator, revalidate_early
from tests.harness.doubles import ManualClock


@pytest.mark.parametrize(
    ("remaining", "delta", "beta"), [(1.0, 1.0, 1.0), (3.0, 1.0, 1.0), (2.0, 0.5, 2.0)]
)
def test_xfetch_revalidates_with_probability_exp_minus_remaining_over_delta_beta(
    remaining: float, delta: float, beta: float
) -> None:
    draws = [(i + 1) / 100_000 for i in range(100_000)]  # uniform on (0, 1]
    share = sum(revalidate_early(remaining, delta, beta, draw) for draw in draws) / len(draws)
    assert share == pytest.approx(math.exp(-remaining / (delta * beta)), abs=1e-4)


def test_xfetch_edges() -> None:
    assert revalidate_early(0.0, 1.0, 1.0, 1.0)  # expiry reached: always
    assert not revalidate_early(5.0, 1.0, 0.0, 1e-300)  # beta 0: never
    assert not revalidate_early(5.0, 0.0, 1.0, 1e-300)  # no known compute time: never
    assert not revalidate_early(5.0, 1.0, 1.0, 1.0)  # draw 1: log(1) = 0, never early


def test_a_pair_is_queued_once_while_its_revalidation_is_pending() -> None:
    revalidator = BackgroundRevalidator(2, backoff_seconds=1.0, clock=ManualClock())
    gate, ran = threading.Event(), []

    def revalidate(pair: str) -> None:
        gate.wait(5)
        ran.append(pair)

    assert revalidator.submit("ETH-EUR", revalidate)
    assert not revalidator.submit("ETH-EUR", revalidate)  # pending: not queued again
    assert revalidator.submit("BTC-EUR", revalidate)  # another pair: its own
    gate.set()
    assert revalidator.wait_idle(5)
    assert sorted(ran) == ["BTC-EUR", "ETH-EUR"]
    assert revalidator.submit("ETH-EUR", revalidate)  # done: may be queued again
    assert revalidator.wait_idle(5)


def test_a_pair_whose_computation_failed_rests_for_the_backoff() -> None:
    clock = ManualClock()
    revalidator = BackgroundRevalidator(1, backoff_seconds=2.0, clock=clock)
    revalidator.failed("ETH-EUR")
    assert revalidator.resting("ETH-EUR") and not revalidator.resting("BTC-EUR")
    assert not revalidator.submit("ETH-EUR", lambda pair: None)
    clock.advance(2.0)
    assert not revalidator.resting("ETH-EUR")
    revalidator.failed("ETH-EUR")
    revalidator.succeeded("ETH-EUR")  # a success ends the rest at once
    assert not revalidator.resting("ETH-EUR")


def test_a_revalidation_that_raises_is_logged_and_rests_its_pair(
    caplog: pytest.LogCaptureFixture,
) -> None:
    revalidator = BackgroundRevalidator(1, backoff_seconds=5.0, clock=ManualClock())

    def explode(pair: str) -> None:
        raise RuntimeError("model exploded")

    assert revalidator.submit("ETH-EUR", explode)
    assert revalidator.wait_idle(5)
    assert revalidator.resting("ETH-EUR")
    assert "background revalidation failed pair=ETH-EUR" in caplog.text
