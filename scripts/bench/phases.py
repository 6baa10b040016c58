"""The benchmark's phases: hits, a cold stampede, steady state under expiry, scaling.

Within a phase every target is measured once per round, in an order rotated from one
round to the next (ABC, BCA, CAB...): a burst of noise on the machine then falls on
every target alike, and the ratios are taken round by round.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from predictions.settings import Settings
from scripts.bench import probes, scaling, wrk
from scripts.bench.results import (
    FLASK_CACHING,
    OURS,
    SEED,
    HitRun,
    Results,
    StampedeRun,
    SteadyRun,
)
from scripts.bench.stampede import stampede
from scripts.bench.targets import StartFailed, Target
from tests.harness.processes import RedisServer

# Targets that compute on a miss (the floors never do).
COMPUTING = (OURS, FLASK_CACHING, SEED)
# Baselines serve hits for the whole hit phase: no expiry may turn one into a miss.
HIT_PHASE_BASELINE_TTL = "3600"
# After forget(): the write feed tells following API processes at once; one that is not
# following (its subscription lost) keeps its copy for NEAR_CACHE_SECONDS at most.
COLD_SETTLE_SECONDS = Settings().near_cache_seconds + 0.05


@dataclasses.dataclass(frozen=True)
class Plan:
    mode: str
    rounds: int
    sequential_seconds: float
    load_seconds: float
    steady_rounds: int
    steady_seconds: float
    steady_targets: tuple[str, ...]
    scale_points: tuple[int, ...]
    scale_repeats: int
    scale_rounds: int
    scale_hit_seconds: float
    scale_load_seconds: float
    targets: tuple[str, ...]
    # Two wrk threads for two cores: the load generator shares the box with the servers.
    threads: int = 2
    connections: int = 32
    stampede_clients: int = 50
    # The seed's expiry, for every target in the steady phase (ours refreshes at a third).
    steady_ttl_seconds: float = 5.0


class Broken(RuntimeError):
    """A measurement that is not a measurement (errors instead of answers)."""


def check_answers(title: str, result: wrk.WrkResult) -> None:
    """Raise Broken if a run got no answers or mostly errors: the figures would lie."""
    problem = result.problem()
    if problem:
        raise Broken(f"{title}: {problem}")


def rotated(items: Sequence[str], by: int) -> list[str]:
    by %= len(items)
    return [*items[by:], *items[:by]]


def load_run(
    target: Target, pairs_file: Path, plan: Plan, seconds: float
) -> tuple[wrk.WrkResult, list[int]]:
    """wrk with many connections; the per-worker connection split sampled mid-run."""
    argv = wrk.command(
        target.url, pairs_file, threads=plan.threads, connections=plan.connections, seconds=seconds
    )
    running = wrk.WrkRun(argv, seconds)
    time.sleep(seconds / 2)
    split = probes.connection_split(target.server.pid, target.port)
    return running.result(), split


def start_targets(
    names: Sequence[str], make: Callable[[str], Target], label: str, started: list[Target]
) -> dict[str, Target]:
    """Start targets (recorded in ``started`` at once, so that a failure still stops them)."""
    targets = {}
    for name in names:
        target = make(name)
        started.append(target)
        targets[name] = target.start(label)
    return targets


def hit_phase(
    plan: Plan,
    make: Callable[[str, dict[str, str]], Target],
    pairs_file: Path,
    results: Results,
    started: list[Target],
    log: Callable[[str], None],
) -> None:
    """Every target with every pair cached: sequential latency, load, then a stampede."""

    def build(name: str) -> Target:
        # Ours runs with its real configuration; baselines with an expiry longer than the
        # phase, so that this phase measures hits only.
        return make(
            name, {} if name == OURS else {"PREDICTION_TTL_SECONDS": HIT_PHASE_BASELINE_TTL}
        )

    targets = start_targets(plan.targets, build, "hits", started)
    log(
        "gunicorn workers, as each logged at start-up: "
        + ", ".join(f"{n} {t.worker_class}" for n, t in targets.items() if t.worker_class)
    )
    for number in range(plan.rounds):
        order = rotated(plan.targets, number)
        for name in order:
            target = targets[name]
            target.warm()
            sequential = wrk.run(
                target.url, pairs_file, threads=1, connections=1, seconds=plan.sequential_seconds
            )
            check_answers(target.title, sequential)
            load, split = load_run(target, pairs_file, plan, plan.load_seconds)
            check_answers(target.title, load)
            results.hits.append(HitRun(name, number, sequential, load, split))
            log(
                f"round {number + 1} {name:<14} {load.rps:>8.0f} req/s  "
                f"p50 {load.p50_ms:6.2f} ms  p99 {load.p99_ms:7.2f} ms  "
                f"sequential p50 {sequential.p50_ms:.3f} ms  split {split}"
            )
        for name in (n for n in order if n in COMPUTING):
            results.stampedes.append(stampede_run(targets[name], number, plan, log))
    for target in targets.values():
        target.stop()


def stampede_run(
    target: Target, number: int, plan: Plan, log: Callable[[str], None]
) -> StampedeRun:
    """Many concurrent requests for one cold pair: how many model runs did they cost?"""
    pair = target.pairs[0]
    target.make_cold(pair)
    if target.name == OURS:
        time.sleep(COLD_SETTLE_SECONDS)
    before = target.model_runs()
    found = stampede(target.port, f"/predict/{pair}", plan.stampede_clients)
    # Log lines are written before the answers they delay; a moment covers a slow pipe.
    time.sleep(0.2)
    runs = target.model_runs() - before
    if found.statuses.get(200, 0) == 0:
        raise Broken(f"{target.title}: no stampede request was answered ({found.statuses})")
    if runs == 0:
        # Not broken: beat's refresh may have landed between the forget and the burst.
        log(f"warning: {target.title}: the stampede ran no model; the pair was not cold")
    log(
        f"round {number + 1} {target.name:<14} stampede of {found.clients}: {runs} model runs, "
        f"answers {found.statuses}, {found.seconds:.2f} s"
    )
    return StampedeRun(target.name, number, found.clients, runs, found.statuses, found.seconds)


def steady_phase(
    plan: Plan,
    make: Callable[[str, dict[str, str]], Target],
    pairs_file: Path,
    results: Results,
    started: list[Target],
    log: Callable[[str], None],
) -> None:
    """Load across every pair for a long run while predictions expire and refresh."""
    ttl = plan.steady_ttl_seconds
    settings = {
        "PREDICTION_TTL_SECONDS": f"{ttl:g}",
        # Ours refreshes at a third of the TTL, as its defaults do (20 s for 60 s).
        "REFRESH_INTERVAL_SECONDS": f"{ttl / 3:.3f}",
    }
    targets = start_targets(plan.steady_targets, lambda n: make(n, settings), "steady", started)
    for number in range(plan.steady_rounds):
        for name in rotated(plan.steady_targets, number):
            target = targets[name]
            target.warm()
            before = target.model_runs()
            result, split = load_run(target, pairs_file, plan, plan.steady_seconds)
            if result.requests == 0:
                raise Broken(f"{target.title}: wrk completed no request")
            runs = target.model_runs() - before
            results.steady.append(SteadyRun(name, number, result, runs, split))
            log(
                f"steady {number + 1} {name:<14} {result.rps:>8.0f} req/s  "
                f"p50 {result.p50_ms:6.2f} ms  p99 {result.p99_ms:7.2f} ms  "
                f"waited for the model {result.misses}  model runs {runs}  "
                f"non-2xx {result.non_2xx}"
            )
    for target in targets.values():
        target.stop()


def scaling_phase(
    plan: Plan,
    redis_server: RedisServer,
    work_dir: Path,
    run_id: str,
    results: Results,
    log: Callable[[str], None],
) -> None:
    for count in plan.scale_points:
        point = scaling.measure_point(
            count,
            redis_server,
            work_dir,
            run_id,
            repeats=plan.scale_repeats,
            rounds=plan.scale_rounds,
            hit_seconds=plan.scale_hit_seconds,
            load_seconds=plan.scale_load_seconds,
            threads=plan.threads,
            connections=plan.connections,
        )
        measured = [
            *point.hits,
            *point.reference_hits,
            *point.hits_on_reference_pairs,
            *point.random_loads,
            *point.reference_loads,
            point.load,
        ]
        for hit in measured:
            check_answers(f"ours with {count} pairs", hit)
        results.scale.append(point)
        log(
            f"scale {count:>6} pairs: refresh {point.refresh_median:.3f} s "
            f"{[round(s, 3) for s in point.refresh_seconds]}  "
            f"redis {point.redis_used_memory / 1e6:.2f} MB  hit p50 {point.hit_p50_ms:.3f} ms "
            f"(vs 4 pairs {point.hit_p50_vs_reference or 0:.2f}x, "
            f"same 4 asked {point.same_pairs_p50_vs_reference or 0:.2f}x)  "
            f"at random {[round(r.rps) for r in point.random_loads]} req/s "
            f"vs 4 pairs {[round(r.rps) for r in point.reference_loads]} "
            f"({point.random_rps_vs_reference or 0:.2f}x)  "
            f"misses {sum(r.misses for r in measured)}  "
            f"workers that read every pair {point.warmed_workers} in {point.fill_seconds:.1f} s  "
            f"API RSS {[round(m, 1) for m in point.api_rss_mib]} MiB  "
            f"pool RSS {[round(m, 1) for m in point.pool_rss_mib]} MiB"
        )


__all__ = ["Broken", "Plan", "StartFailed", "hit_phase", "scaling_phase", "steady_phase"]
