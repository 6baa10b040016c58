"""The benchmark's phases: hits and a cold stampede, steady state under expiry, scaling.

Within a phase every target is measured once per round, in an order rotated from one
round to the next (ABC, BCA, CAB...): a burst of noise on the machine then falls on
every target alike, and ratios are taken round by round (the median of their ratios).
Each phase answers plain tables, printed and written to docs/performance.md alike.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from celery import Celery

from beat_schedule import REFRESH_ALL_TASK
from predictions.settings import DEFAULT_PAIRS, Settings
from scripts.bench import wrk
from scripts.bench.targets import (
    FLASK_CACHING,
    OURS,
    OURS_VERSION,
    SEED,
    TITLES,
    StartFailed,
    Target,
    connection_split,
    rss_mib,
    worker_holding,
    worker_processes,
)
from tests.harness.load import HOST, burst, read_reply, request_bytes
from tests.harness.processes import RedisServer, wait_for
from tests.harness.store import computed_at

COMPUTING = (OURS, FLASK_CACHING, SEED)  # the targets that compute on a miss
# After a forget, an API process that is not following the write feed keeps its near
# copy for NEAR_CACHE_SECONDS at most.
COLD_SETTLE_SECONDS = Settings().near_cache_seconds + 0.05
# Scaling: no beat, a model that takes no time, and an expiry longer than a point takes.
SCALE_SETTINGS = {
    "SIMULATED_MODEL_LATENCY_SECONDS": "0",
    "PREDICTION_TTL_SECONDS": "3600",
    # Batches are dropped once their interval is gone by: on a busy machine a refresh
    # that loads the model may take longer than the default 20 s.
    "REFRESH_INTERVAL_SECONDS": "600",
}
REFRESH_TIMEOUT_SECONDS = 120
FILL_DEPTH = 100  # requests pipelined at a time when every worker reads every pair


PERCENTILES = ("p50_ms", "p90_ms", "p99_ms")
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Table:
    """A title and rows: Markdown, its columns aligned for the terminal too."""

    title: str
    header: Sequence[str]
    rows: Sequence[Sequence[str]]

    def markdown(self) -> str:
        rows = [self.header, ["---"] * len(self.header), *self.rows]
        widths = [max(len(row[i]) for row in rows) for i in range(len(self.header))]
        return "\n".join(
            "| "
            + " | ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
            + " |"
            for row in rows
        )


@dataclasses.dataclass(frozen=True)
class Plan:
    mode: str
    rounds: int  # of the hit phase
    sequential_seconds: float  # each wrk -t1 -c1 run (hits, and latency when scaling)
    load_seconds: float  # each wrk -t2 -c32 run (hits, and throughput when scaling)
    steady_rounds: int
    steady_seconds: float
    steady_targets: tuple[str, ...]
    scale_points: tuple[int, ...]
    scale_repeats: int  # timed refreshes at each point
    scale_rounds: int
    targets: tuple[str, ...]
    # Two wrk threads for two cores: the load generator shares the box with the servers.
    threads: int = 2
    connections: int = 32
    stampede_clients: int = 50
    steady_ttl_seconds: float = 5.0  # the seed's expiry; ours refreshes at a third of it


class Broken(RuntimeError):
    """A measurement that is not a measurement (errors instead of answers)."""


@dataclasses.dataclass
class Bench:
    """One run: its plan, its Redis, where its logs go, and every target it started."""

    plan: Plan
    redis_server: RedisServer
    work_dir: Path
    run_id: str
    started: list[Target] = dataclasses.field(default_factory=list)

    def target(
        self, name: str, env: dict[str, str], pairs: Sequence[str] = DEFAULT_PAIRS
    ) -> Target:
        target = Target(name, self.redis_server, self.work_dir, pairs, self.run_id, env)
        self.started.append(target)  # at once, so that a failure still stops it
        return target

    def pairs_file(self, pairs: Sequence[str], name: str) -> Path:
        path = self.work_dir / name
        path.write_text("\n".join(pairs) + "\n")
        return path

    def load(self, target: Target, pairs_file: Path, seconds: float) -> tuple[wrk.WrkResult, str]:
        """wrk with many connections; the connections per worker, sampled mid-run."""
        plan = self.plan
        running = wrk.WrkRun(target.url, pairs_file, plan.threads, plan.connections, seconds)
        time.sleep(seconds / 2)
        split = "/".join(map(str, connection_split(target.server.pid, target.port)))
        return checked(target.title, running.result()), split


def log(message: str) -> None:
    print(message, flush=True)


def checked(title: str, result: wrk.WrkResult) -> wrk.WrkResult:
    """The result, unless it got no answers or mostly errors: its figures would lie."""
    if problem := result.problem():
        raise Broken(f"{title}: {problem}")
    return result


def rotated(items: Sequence[T], by: int) -> list[T]:
    by %= len(items)
    return [*items[by:], *items[:by]]


def median(values: Iterable[float]) -> float:
    return statistics.median(values)


def ratio(mine: Sequence[float], theirs: Sequence[float]) -> str:
    """The median of per-round ratios: each round's figures shared that round's noise."""
    ratios = [a / b for a, b in zip(mine, theirs, strict=False) if b > 0]
    return f"{median(ratios):.2f}x" if ratios else "-"


def ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def each(values: Sequence[float], spec: str = ",.0f") -> str:
    """Per round (or repeat, or process), in order."""
    return ", ".join(format(value, spec) for value in values) or "-"


def hit_phase(bench: Bench) -> list[Table]:
    """Every target with every pair cached: sequential latency, load, then a stampede."""
    plan, pairs_file = bench.plan, bench.pairs_file(DEFAULT_PAIRS, "pairs.txt")
    # Ours as configured; baselines with an expiry longer than the phase: hits only.
    targets = {
        name: bench.target(name, {} if name == OURS else {"PREDICTION_TTL_SECONDS": "3600"})
        for name in plan.targets
    }
    for target in targets.values():
        target.start("hits")
    workers = [f"{name} {t.worker_class}" for name, t in targets.items() if t.worker_class]
    log("gunicorn workers, as logged: " + ", ".join(workers))
    seq: dict[str, list[wrk.WrkResult]] = {name: [] for name in targets}
    load: dict[str, list[wrk.WrkResult]] = {name: [] for name in targets}
    splits: dict[str, list[str]] = {name: [] for name in targets}
    cold: dict[str, list[tuple[int, float]]] = {n: [] for n in targets if n in COMPUTING}
    for number in range(plan.rounds):
        order = rotated(plan.targets, number)
        for name in order:
            target = targets[name]
            target.warm()
            found = wrk.run(target.url, pairs_file, 1, 1, plan.sequential_seconds)
            seq[name].append(checked(target.title, found))
            found, split = bench.load(target, pairs_file, plan.load_seconds)
            load[name].append(found)
            splits[name].append(split)
            log(f"hits {number + 1} {name}: {found}; split {split}; sequential {seq[name][-1]}")
        for name in (n for n in order if n in cold):
            cold[name].append(stampede(targets[name], plan.stampede_clients, number))
    for target in targets.values():
        target.stop()

    hits, by_round = [], []
    for name in plan.targets:
        rps, seq_p50 = [r.rps for r in load[name]], [r.p50_ms for r in seq[name]]
        vs_ours = name != OURS
        hits.append(
            [TITLES[name], f"{median(rps):,.0f}"]
            + [ms(median(getattr(r, f) for r in load[name])) for f in PERCENTILES]
            + [ms(median(seq_p50))]
            + [ratio([r.rps for r in load[OURS]], rps) if vs_ours else "-"]
            + [ratio([r.p50_ms for r in seq[OURS]], seq_p50) if vs_ours else "-"]
        )
        slowest = f"{min(rps) / median(rps):.2f}x" if len(rps) >= 3 else "-"
        by_round.append([TITLES[name], each(rps), slowest, "; ".join(splits[name])])
    stampedes = [
        [TITLES[name], str(plan.stampede_clients), each([r for r, _ in found], "d")]
        + [f"{median(s for _, s in found):.2f}"]
        for name, found in cold.items()
    ]
    return [
        Table(
            f"Hits, medians of {plan.rounds} round(s)",
            ["target", "req/s", "p50 ms", "p90 ms", "p99 ms", "sequential p50 ms"]
            + ["ours / it, req/s", "ours / it, sequential p50"],
            hits,
        ),
        Table(
            "Hit throughput round by round",
            ["target", "req/s", "slowest / median round", "connections per worker, mid-run"],
            by_round,
        ),
        Table(
            "Cold stampede: concurrent requests for one expired pair",
            ["target", "requests", "model runs, per round", "seconds to the last answer"],
            stampedes,
        ),
    ]


def stampede(target: Target, clients: int, number: int) -> tuple[int, float]:
    """Many concurrent requests for one cold pair: how many model runs did they cost?"""
    pair = target.pairs[0]
    target.make_cold(pair)
    if target.name == OURS:
        time.sleep(COLD_SETTLE_SECONDS)
    before = target.model_runs(pair)
    try:
        replies = asyncio.run(burst(target.port, f"/predict/{pair}", clients))
    except (OSError, EOFError, TimeoutError) as exc:
        raise Broken(f"{target.title}: stampede: {exc!r}") from None
    time.sleep(0.2)  # log lines are written before their answers; a moment for the pipe
    runs = target.model_runs(pair) - before
    answered = sum(reply.status == 200 for reply in replies)
    if not answered:
        raise Broken(f"{target.title}: no stampede request was answered 200")
    if runs == 0:  # not broken: beat's refresh may have landed between forget and burst
        log(f"warning: {target.title}: the stampede ran no model; the pair was not cold")
    seconds = max(reply.seconds for reply in replies)
    log(
        f"round {number + 1} {target.name:<14} stampede of {clients}: {runs} model runs, "
        f"{answered} answered 200, {seconds:.2f} s"
    )
    return runs, seconds


def steady_phase(bench: Bench) -> list[Table]:
    """Load across every pair for a long run while predictions expire and refresh."""
    plan, pairs_file = bench.plan, bench.pairs_file(DEFAULT_PAIRS, "pairs.txt")
    ttl = plan.steady_ttl_seconds
    settings = {"PREDICTION_TTL_SECONDS": f"{ttl:g}", "REFRESH_INTERVAL_SECONDS": f"{ttl / 3:.3f}"}
    targets = {name: bench.target(name, settings) for name in plan.steady_targets}
    for target in targets.values():
        target.start("steady")
    runs: dict[str, list[tuple[wrk.WrkResult, int, str]]] = {name: [] for name in targets}
    for number in range(plan.steady_rounds):
        for name in rotated(plan.steady_targets, number):
            target = targets[name]
            target.warm()
            before = target.model_runs()
            found, split = bench.load(target, pairs_file, plan.steady_seconds)
            runs[name].append((found, target.model_runs() - before, split))
            log(f"steady {number + 1} {name}: {found}; split {split}")
    for target in targets.values():
        target.stop()
    rows = []
    for name, results in runs.items():
        loads = [r for r, _, _ in results]
        rows.append(
            [TITLES[name], f"{median(r.rps for r in loads):,.0f}"]
            + [ms(median(r.p50_ms for r in loads)), ms(median(r.p99_ms for r in loads))]
            + [f"{median(r.p99_ms / r.p50_ms for r in loads):.1f}"]
            + [each([r.misses for r in loads], "d"), each([n for _, n, _ in results], "d")]
            + [each([r.non_2xx + r.errors for r in loads], "d"), "; ".join(s for *_, s in results)]
        )
    header = ["target", "req/s", "p50 ms", "p99 ms", "p99 / p50", "waited for the model"]
    header += ["model runs in the server", "errors", "connections per worker"]
    return [Table(f"Steady state under load, predictions expiring after {ttl:g} s", header, rows)]


def scaling_phase(bench: Bench) -> list[Table]:
    header = ["pairs", "refresh s", "Redis used MB", "hit p50 ms", "vs 4 pairs"]
    header += ["vs 4 pairs, same 4 asked", "req/s at random", "4-pair API req/s"]
    header += ["at random vs 4 pairs", "req/s in turn", "workers that read every pair"]
    header += ["API worker RSS MiB", "pool RSS MiB"]
    rows = [measure_point(bench, count) for count in bench.plan.scale_points]
    return [Table("Pairs scaling, model latency 0", header, rows)]


def scale_pairs(count: int) -> list[str]:
    """``count`` distinct valid pairs: the default ones first, then P0-USD, P1-USD..."""
    pairs = list(DEFAULT_PAIRS[:count])
    return pairs + [f"P{i}-USD" for i in range(count - len(pairs))]


def measure_point(bench: Bench, count: int) -> list[str]:
    """Our stack with ``count`` pairs: refresh times, then hits alternating round by round
    with an API of the 4 default pairs on the same cache: latency one request at a time
    (this API over all its pairs, and over those 4), throughput with pairs at random.
    RSS last, after a load run across every pair in turn."""
    plan = bench.plan
    pairs, few = scale_pairs(count), scale_pairs(4)
    all_file = bench.pairs_file(pairs, f"pairs-{count}.txt")
    few_file = bench.pairs_file(few, "pairs-4.txt")
    bench.redis_server.client().flushall()
    target = bench.target(OURS, SCALE_SETTINGS, pairs).start(f"scale-{count}", beat=False)
    # Sequential (latency) and loaded (throughput at random) runs, rotated round by round.
    jobs = [(target, all_file, "all", False)]
    if count > len(few):  # the 4-pair API; the N-pair worker refreshes its pairs too
        reference = bench.target(OURS, SCALE_SETTINGS, few).start(f"{count}-4", worker=False)
        jobs += [(reference, few_file, "4", False), (target, few_file, "same 4", False)]
        jobs += [(target, all_file, "random", True), (reference, few_file, "4 loaded", True)]
    broker = Settings(redis_url=target.env["REDIS_URL"]).broker_url  # as the worker reads it
    celery = Celery("bench", broker=broker, set_as_current=False)
    celery.conf.broker_connection_retry_on_startup = True
    try:
        timed_refresh(celery, target)  # the first also loads the model in every pool process
        refreshes = [timed_refresh(celery, target) for _ in range(plan.scale_repeats)]
        used_mb = int(bench.redis_server.client().info("memory")["used_memory"]) / 1e6
        filling = time.perf_counter()
        filled = f"{asyncio.run(fill(target, pairs))} in {time.perf_counter() - filling:.1f} s"
        for api in {job[0] for job in jobs} - {target}:
            asyncio.run(fill(api, few))
        found: dict[str, list[wrk.WrkResult]] = {key: [] for _, _, key, _ in jobs}
        for number in range(plan.scale_rounds):
            for api, file, key, loaded in rotated(jobs, number):
                shape = (plan.threads, plan.connections, plan.load_seconds)
                threads, connections, seconds = shape if loaded else (1, 1, plan.sequential_seconds)
                result = wrk.run(api.url, file, threads, connections, seconds, random_pairs=loaded)
                found[key].append(checked(api.title, result))
        in_turn, _ = bench.load(target, all_file, plan.load_seconds)
        api_rss, pool_rss = (
            rss_mib(target.server.pid),
            rss_mib(target.worker.pid) if target.worker else [],
        )
    finally:
        celery.close()
        for api in {job[0] for job in jobs}:
            api.stop()
    p50s = {key: [r.p50_ms for r in results] for key, results in found.items()}
    rps = {key: [r.rps for r in results] for key, results in found.items()}
    row = [f"{count:,}", each(refreshes, ".3f"), f"{used_mb:.2f}", ms(median(p50s["all"]))]
    row += [ratio(p50s["all"], p50s.get("4", [])), ratio(p50s.get("same 4", []), p50s.get("4", []))]
    row += [each(rps.get("random", [])), each(rps.get("4 loaded", []))]
    row += [ratio(rps.get("random", []), rps.get("4 loaded", [])), f"{in_turn.rps:,.0f}", filled]
    row += [each(api_rss, ".0f"), each(pool_rss, ".0f")]
    log(f"scale {count:>6} pairs: " + "  ".join(row[1:]))
    return row


def timed_refresh(celery: Celery, target: Target) -> float:
    """Seconds from sending refresh_all, as beat would, to the last pair's computed_at."""
    cache = target.redis
    # The cache's database only (the broker's is another). This clears the interval's
    # refresh slot too, so that this refresh_all is not skipped as a second one.
    cache.flushdb()
    sent = time.time()
    celery.send_task(REFRESH_ALL_TASK, expires=REFRESH_TIMEOUT_SECONDS)
    # DBSIZE is O(1): polled until the refresh could be done, without stealing the CPU
    # the worker is measured on; then every pair's stamp is read back.
    what = f"refresh of {len(target.pairs)} pairs"
    wait_for(lambda: cache.dbsize() >= len(target.pairs), REFRESH_TIMEOUT_SECONDS, 0.005, what)
    stamps: dict[str, str] = {}

    def stamped() -> bool:
        for pair in (p for p in target.pairs if p not in stamps):
            if (found := computed_at(cache, pair, OURS_VERSION)) is None:
                return False
            stamps[pair] = found
        return True

    wait_for(stamped, REFRESH_TIMEOUT_SECONDS, 0.05, what)
    return max(datetime.fromisoformat(s).timestamp() for s in stamps.values()) - sent


async def fill(target: Target, pairs: Sequence[str]) -> int:
    """Have every API worker process serve every pair; return how many workers did.

    A process keeps a near copy current from the write feed only once it read the pair
    itself, so with N pairs a worker answers every pair from memory only after it was
    asked for each, as under random clients in time. Here at once, on one keep-alive
    connection per worker (found in the kernel's socket table), FILL_DEPTH requests
    pipelined at a time, so that its RSS read later is its whole cost of N pairs.
    """
    server = target.server.pid
    workers = len(worker_processes(server))
    held: dict[int, tuple[asyncio.StreamReader, asyncio.StreamWriter]] = {}
    for _ in range(20 * workers):
        if len(held) == workers:
            break
        reader, writer = await asyncio.open_connection(HOST, target.port)
        await ask(target, reader, writer, [pairs[0]])  # answered: accepted by a worker
        pid = worker_holding(server, target.port, writer.get_extra_info("sockname")[1])
        if pid is None or pid in held:
            writer.close()
        else:
            held[pid] = (reader, writer)
    await asyncio.sleep(0.5)  # a process subscribes to the write feed on its first request

    async def walk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for start in range(0, len(pairs), FILL_DEPTH):
            await ask(target, reader, writer, pairs[start : start + FILL_DEPTH])

    try:
        await asyncio.gather(*(walk(*connection) for connection in held.values()))
    finally:
        for _, writer in held.values():
            writer.close()
    return len(held)


async def ask(
    target: Target, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pairs: Sequence[str]
) -> None:
    """GET every pair on one connection, pipelined; every answer must be a 200."""
    writer.write(b"".join(request_bytes(f"/predict/{pair}", keep_alive=True) for pair in pairs))
    await writer.drain()
    for _ in pairs:
        reply = await read_reply(reader, time.perf_counter())
        if reply.status != 200:
            raise StartFailed(f"{target.title}: answered {reply.status} while filling")
