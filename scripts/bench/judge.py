"""The issue's targets, and the verdict on each: PASS, FALL SHORT or NOT MEASURED.

A verdict is information, never a failure of the benchmark: the driver exits non-zero
only when it could not measure (see run.py). Standard library only (unit-tested).
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Iterable, Mapping

PASS = "PASS"  # noqa: S105 - a verdict, not a password
FALL_SHORT = "FALL SHORT"
NOT_MEASURED = "NOT MEASURED"


@dataclasses.dataclass(frozen=True)
class Goal:
    key: str
    text: str
    limit: float
    at_least: bool  # True: the value must be >= limit; False: <= limit
    unit: str  # "x", "s", "MiB" or "" (a count)

    def describe_limit(self) -> str:
        return f"{'>=' if self.at_least else '<='} {format_value(self.limit, self.unit)}"


GOALS = (
    # Issue 10, "Hits at the floor": the baselines as in every earlier report (gthread).
    Goal("hit_rps_vs_flask_caching", "hit throughput vs Flask-Caching", 2.5, True, "x"),
    Goal("hit_rps_vs_seed", "hit throughput vs seed-style FastAPI", 3.5, True, "x"),
    Goal("hit_rps_vs_floor", "hit throughput vs constant-JSON floor", 1.0, True, "x"),
    Goal("seq_p50_vs_floor", "sequential hit p50 vs constant-JSON floor", 1.0, False, "x"),
    # No connection pile-up: every round of ours within 0.8x of its median round.
    Goal("hit_slowest_round", "hit throughput: slowest round vs median round", 0.8, True, "x"),
    Goal("steady_p99_over_p50", "steady state under load: p99 / p50", 3.0, False, "x"),
    Goal("steady_waited", "steady state: requests that waited for the model", 0, False, ""),
    Goal("refresh_1000_s", "refresh of 1,000 pairs (model latency 0)", 1.0, False, "s"),
    Goal("refresh_10000_s", "refresh of 10,000 pairs (model latency 0)", 5.0, False, "s"),
    # Issue 10, "Many pairs as fast as few".
    Goal(
        "hit_rps_10000_random_vs_4",
        "hit throughput, 10,000 pairs at random vs 4 pairs",
        0.9,
        True,
        "x",
    ),
    Goal("hit_p50_10000_vs_4", "hit p50 with 10,000 pairs vs with 4", 1.1, False, "x"),
    Goal("api_rss_mib", "largest API worker RSS with 10,000 pairs", 80, False, "MiB"),
    Goal("pool_rss_mib", "largest Celery pool process RSS with 10,000 pairs", 150, False, "MiB"),
)


@dataclasses.dataclass(frozen=True)
class Verdict:
    goal: Goal
    value: float | None

    @property
    def status(self) -> str:
        if self.value is None:
            return NOT_MEASURED
        if self.goal.at_least:
            return PASS if self.value >= self.goal.limit else FALL_SHORT
        return PASS if self.value <= self.goal.limit else FALL_SHORT

    def line(self) -> str:
        shown = "-" if self.value is None else format_value(self.value, self.goal.unit)
        return (
            f"{self.status:<12} {self.goal.text:<52} {shown:>10}  "
            f"(target {self.goal.describe_limit()})"
        )


def judge(measured: Mapping[str, float | None]) -> list[Verdict]:
    """A verdict for every goal; a goal missing from ``measured`` was not measured."""
    unknown = set(measured) - {goal.key for goal in GOALS}
    if unknown:
        raise KeyError(f"no such goal: {sorted(unknown)}")
    return [Verdict(goal, measured.get(goal.key)) for goal in GOALS]


def median_ratio(numerators: Iterable[float], denominators: Iterable[float]) -> float | None:
    """The median of per-round ratios: each round's targets shared that round's noise."""
    ratios = [n / d for n, d in zip(numerators, denominators, strict=True) if d > 0]
    return statistics.median(ratios) if ratios else None


def format_value(value: float, unit: str) -> str:
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    return f"{value:g}"
