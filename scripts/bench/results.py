"""What one benchmark run measured, and the figures the targets are judged on.

Standard library only: tests/scripts/test_bench.py builds Results by hand.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Callable, Sequence

from scripts.bench.judge import median_ratio
from scripts.bench.wrk import WrkResult

OURS = "ours"
FLASK_CACHING = "flask-caching"
SEED = "seed"
FLOOR = "floor"
FLOOR_GET = "floor-get"
TITLES = {
    OURS: "ours (gunicorn api.wsgi:app)",
    FLASK_CACHING: "Flask-Caching memoize",
    SEED: "seed-style FastAPI",
    FLOOR: "floor: constant JSON",
    FLOOR_GET: "floor: one Redis GET",
}
BASELINE_PAIRS = 4  # the default PAIRS: the reference point of the scaling target
# Fewer rounds than this, and "the slowest round vs the median round" says nothing.
MIN_ROUNDS_FOR_SPREAD = 3


@dataclasses.dataclass(frozen=True)
class HitRun:
    """One target in one round of the hit phase (every pair cached, no expiry)."""

    target: str
    round: int
    sequential: WrkResult  # one connection, one request at a time
    load: WrkResult  # many keep-alive connections
    split: list[int]  # established connections per worker process, mid-run


@dataclasses.dataclass(frozen=True)
class StampedeRun:
    target: str
    round: int
    clients: int
    model_runs: int
    statuses: dict[int, int]
    seconds: float


@dataclasses.dataclass(frozen=True)
class SteadyRun:
    """Load across every pair while predictions expire (and, for ours, beat refreshes)."""

    target: str
    round: int
    result: WrkResult
    model_runs: int  # computations in the HTTP server's processes
    split: list[int]


@dataclasses.dataclass(frozen=True)
class ScalePoint:
    """Our stack with ``pairs`` configured pairs and a model that takes no time."""

    pairs: int
    refresh_seconds: list[float]  # refresh_all sent -> every pair written, per repeat
    redis_used_memory: int  # bytes, every pair cached (INFO memory used_memory)
    redis_bytes_per_pair: float  # MEMORY USAGE of a prediction key, averaged
    hits: list[WrkResult]  # per round: one connection, one request at a time, every pair
    # The same rounds, alternating, on an API configured with the 4 default pairs...
    reference_hits: list[WrkResult]
    # ...and on this API, asked for those 4 pairs only.
    hits_on_reference_pairs: list[WrkResult]
    load: WrkResult
    api_rss_mib: list[float]
    pool_rss_mib: list[float]
    # Throughput under load, per round, alternating: this API asked for its pairs at
    # random, and the 4-pair API for its 4 (empty: no reference at this point).
    random_loads: list[WrkResult] = dataclasses.field(default_factory=list)
    reference_loads: list[WrkResult] = dataclasses.field(default_factory=list)
    # API worker processes that read every pair before the measurements, and how long
    # that took (each worker's first read of a pair goes to Redis).
    warmed_workers: int = 0
    fill_seconds: float = 0.0

    @property
    def refresh_median(self) -> float:
        return statistics.median(self.refresh_seconds)

    @property
    def hit_p50_ms(self) -> float:
        return statistics.median(hit.p50_ms for hit in self.hits)

    @property
    def hit_p50_vs_reference(self) -> float | None:
        """Median over rounds of this hit p50 / the 4-pair API's (None: no reference)."""
        if not self.reference_hits:
            return None
        return median_ratio(
            [hit.p50_ms for hit in self.hits], [hit.p50_ms for hit in self.reference_hits]
        )

    @property
    def random_rps_vs_reference(self) -> float | None:
        """Median over rounds of this API's req/s at random / the 4-pair API's."""
        if not self.reference_loads:
            return None
        return median_ratio(
            [load.rps for load in self.random_loads], [load.rps for load in self.reference_loads]
        )

    @property
    def same_pairs_p50_vs_reference(self) -> float | None:
        """As hit_p50_vs_reference, both APIs asked for the same 4 pairs."""
        if not self.reference_hits:
            return None
        return median_ratio(
            [hit.p50_ms for hit in self.hits_on_reference_pairs],
            [hit.p50_ms for hit in self.reference_hits],
        )


@dataclasses.dataclass
class Results:
    mode: str
    targets: list[str]
    rounds: int
    machine: dict[str, str] = dataclasses.field(default_factory=dict)
    versions: dict[str, str] = dataclasses.field(default_factory=dict)
    settings: dict[str, str] = dataclasses.field(default_factory=dict)
    hits: list[HitRun] = dataclasses.field(default_factory=list)
    stampedes: list[StampedeRun] = dataclasses.field(default_factory=list)
    steady: list[SteadyRun] = dataclasses.field(default_factory=list)
    scale: list[ScalePoint] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def hit_runs(self, target: str) -> list[HitRun]:
        return sorted((h for h in self.hits if h.target == target), key=lambda h: h.round)

    def hit_median(self, target: str, figure: Callable[[HitRun], float]) -> float | None:
        values = [figure(h) for h in self.hit_runs(target)]
        return statistics.median(values) if values else None

    def hit_ratio(self, target: str, other: str, figure: Callable[[HitRun], float]) -> float | None:
        """Median over rounds of figure(target) / figure(other), rounds both measured."""
        mine = {h.round: figure(h) for h in self.hit_runs(target)}
        theirs = {h.round: figure(h) for h in self.hit_runs(other)}
        shared = sorted(mine.keys() & theirs.keys())
        if not shared:
            return None
        return median_ratio([mine[r] for r in shared], [theirs[r] for r in shared])

    def slowest_round(self, target: str) -> float | None:
        """The slowest round's hit throughput / the median round's (None: too few rounds).

        Below 1 by noise alone; far below when the keep-alive connections of a round
        pile onto one worker while another idles.
        """
        values = [h.load.rps for h in self.hit_runs(target)]
        if len(values) < MIN_ROUNDS_FOR_SPREAD:
            return None
        middle = statistics.median(values)
        return min(values) / middle if middle > 0 else None

    def steady_runs(self, target: str) -> list[SteadyRun]:
        return sorted((s for s in self.steady if s.target == target), key=lambda s: s.round)

    def scale_point(self, pairs: int) -> ScalePoint | None:
        return next((p for p in self.scale if p.pairs == pairs), None)

    def measured(self) -> dict[str, float | None]:
        """The figures judge.GOALS are judged on (None: not measured in this run)."""

        def rps(h: HitRun) -> float:
            return h.load.rps

        def seq_p50(h: HitRun) -> float:
            return h.sequential.p50_ms

        steady = self.steady_runs(OURS)
        big, thousand = self.scale_point(10_000), self.scale_point(1_000)
        return {
            "hit_rps_vs_flask_caching": self.hit_ratio(OURS, FLASK_CACHING, rps),
            "hit_rps_vs_seed": self.hit_ratio(OURS, SEED, rps),
            "hit_rps_vs_floor": self.hit_ratio(OURS, FLOOR, rps),
            "seq_p50_vs_floor": self.hit_ratio(OURS, FLOOR, seq_p50),
            "hit_slowest_round": self.slowest_round(OURS),
            "steady_p99_over_p50": _median([s.result.p99_ms / s.result.p50_ms for s in steady])
            if steady
            else None,
            "steady_waited": float(sum(s.result.misses for s in steady)) if steady else None,
            "refresh_1000_s": thousand.refresh_median if thousand else None,
            "refresh_10000_s": big.refresh_median if big else None,
            "hit_rps_10000_random_vs_4": big.random_rps_vs_reference if big else None,
            "hit_p50_10000_vs_4": big.hit_p50_vs_reference if big else None,
            "api_rss_mib": max(big.api_rss_mib) if big and big.api_rss_mib else None,
            "pool_rss_mib": max(big.pool_rss_mib) if big and big.pool_rss_mib else None,
        }


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None
