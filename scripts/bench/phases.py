"""The benchmark's phases: hits and a cold stampede, steady state under expiry, scaling.

Each round measures every target once, in an order rotated round by round (ABC, BCA...),
so that noise falls on all alike; ratios are medians of per-round ratios.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from statistics import median
from typing import TypeVar, cast

import orjson
from celery import Celery

from beat_schedule import REFRESH_ALL_TASK
from predictions.infra.keys import prediction_key, refresh_slot_key
from predictions.settings import DEFAULT_PAIRS, Settings
from scripts.bench.targets import COMPUTING, OURS, OURS_VERSION, Broken, Target, rss_mib
from scripts.bench.wrk import WrkResult, WrkRun
from tests.harness.load import HOST, burst, read_reply, request_bytes
from tests.harness.processes import RedisServer, wait_for

THREADS, CONNECTIONS = 2, 32  # two wrk threads: the load generator shares the 2 cores
STAMPEDE_CLIENTS = 50
STEADY_TTL_SECONDS = 5.0  # a seed-style expiry; ours refreshes at a third of it
# After a forget, an API process not following the write feed keeps its near copy a while.
COLD_SETTLE_SECONDS = Settings().near_cache_seconds + 0.05
# Scaling: a model that takes no time, an expiry longer than a point, and an interval
# longer than a refresh loading the model on a busy machine (late batches are dropped).
SCALE_SETTINGS = {
    "SIMULATED_MODEL_LATENCY_SECONDS": "0", "PREDICTION_TTL_SECONDS": "3600",
    "REFRESH_INTERVAL_SECONDS": "600",
}  # fmt: skip
REFRESH_TIMEOUT_SECONDS = 120  # plus 5 ms a pair (refresh_timeout)
# The 4-pair API's own database (targets.py's are 0 to 5, the broker's 1).
REFERENCE_DATABASE = 6
FILL_DEPTH = 100  # requests pipelined at a time when every worker reads every pair
FILL_CONNECTIONS = 4  # per worker process: one waits on Redis while another is served
PAIRS = DEFAULT_PAIRS  # of the hit and steady phases, and the scaling phase's reference
FIGURES = ("all", "4", "same 4", "random", "4 loaded")  # of the scaling phase's hits
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Table:
    """A title, column names ("a | b") and rows: Markdown, aligned for the terminal too."""

    title: str
    header: str
    rows: Sequence[Sequence[str]]

    def markdown(self) -> str:
        names = self.header.split(" | ")
        rows = [names, ["---"] * len(names), *self.rows]
        widths = [max(len(row[i]) for row in rows) for i in range(len(names))]
        cells = ([c.ljust(w) for c, w in zip(row, widths, strict=True)] for row in rows)
        return "\n".join(f"| {' | '.join(row)} |" for row in cells)


@dataclasses.dataclass(frozen=True)
class Plan:
    mode: str
    rounds: int  # of the hit phase
    sequential_seconds: float  # each wrk -t1 -c1 run
    load_seconds: float  # each loaded run of the hit and scaling phases
    steady_rounds: int
    steady_seconds: float
    steady_targets: tuple[str, ...]
    scale_points: tuple[int, ...]
    scale_repeats: int  # timed refreshes at each point
    scale_rounds: int
    targets: tuple[str, ...]
    # The many-pairs phase (scripts/bench/many_pairs.py).
    registry_pairs: int
    registry_rounds: int
    asked_pairs: int  # of registry_pairs, asked through the API under PRECOMPUTE=asked
    asked_interval_seconds: float
    asked_intervals: int
    cold_start_pairs: int


@dataclasses.dataclass
class Bench:
    """One run: its plan, its Redis, where its logs go, and every target it started."""

    plan: Plan
    redis_server: RedisServer
    work_dir: Path
    run_id: str
    started: list[Target] = dataclasses.field(default_factory=list)
    # The scaling phase's figures by pair count, that the registry phase reports beside its own.
    scaled: dict[int, dict[str, object]] = dataclasses.field(default_factory=dict)

    def target(
        self, name: str, env: dict[str, str], pairs: Sequence[str] = PAIRS,
        database: int | None = None, registry: bool = False,
    ) -> Target:  # fmt: skip
        target = Target(
            name, self.redis_server, self.work_dir, pairs, self.run_id, env, database, registry
        )
        self.started.append(target)  # at once, so that a failure still stops it
        return target

    def pairs_file(self, pairs: Sequence[str]) -> Path:
        path = self.work_dir / f"pairs-{len(pairs)}.txt"
        path.write_text("\n".join(pairs) + "\n")
        return path

    def run(
        self, target: Target, file: Path, seconds: float = 0, at_random: bool = False
    ) -> WrkResult:
        """wrk -t1 -c1 (no seconds) or loaded; the connections per worker read mid-run."""
        shape = (THREADS, CONNECTIONS, seconds) if seconds else (1, 1, self.plan.sequential_seconds)
        running = WrkRun(target.url, file, *shape, random_pairs=at_random)
        time.sleep(shape[2] / 2)
        split = target.split()
        if problem := (result := running.result()).problem():
            raise Broken(f"{target.title}: {problem}")  # its figures would lie
        return dataclasses.replace(result, split=split)


def rotated(items: Sequence[T], by: int) -> list[T]:
    by %= len(items)
    return [*items[by:], *items[:by]]


def of(results: Sequence[WrkResult], field: str) -> list[float]:
    return [getattr(result, field) for result in results]


def ratio(mine: Sequence[float], theirs: Sequence[float]) -> str:
    """The median of per-round ratios: each round's figures shared that round's noise."""
    ratios = [a / b for a, b in zip(mine, theirs, strict=False) if b > 0]
    return f"{median(ratios):.2f}x" if ratios else "-"


def ms(value: float) -> str:
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def each(values: Sequence[float | str], spec: str = ",.0f") -> str:
    """Per round (or repeat, or process), in order."""
    return "; ".join(format(value, spec) for value in values) or "-"


def hit_phase(bench: Bench) -> list[Table]:
    """Every target with every pair cached: sequential latency, load, then a stampede."""
    plan, pairs_file = bench.plan, bench.pairs_file(PAIRS)
    # Ours as configured; baselines with an expiry longer than the phase: hits only.
    targets = {
        name: bench.target(name, {} if name == OURS else {"PREDICTION_TTL_SECONDS": "3600"})
        for name in plan.targets
    }
    for target in targets.values():
        print(f"{target.start('hits').title}: worker {target.worker_class or '-'}")
    seq: defaultdict[str, list[WrkResult]] = defaultdict(list)
    load: defaultdict[str, list[WrkResult]] = defaultdict(list)
    cold: defaultdict[str, list[tuple[int, float]]] = defaultdict(list)
    for number in range(plan.rounds):
        order = rotated(plan.targets, number)
        for name in order:
            targets[name].warm()
            seq[name].append(bench.run(targets[name], pairs_file))
            load[name].append(bench.run(targets[name], pairs_file, plan.load_seconds))
            print(f"hits {number + 1} {name}: {load[name][-1]}; sequential {seq[name][-1]}")
        for name in (n for n in order if n in COMPUTING):
            cold[name].append(stampede(targets[name], number))
    for target in targets.values():
        target.stop()
    hits = []
    for name in plan.targets:
        rps, seq_p50 = of(load[name], "rps"), of(seq[name], "p50_ms")
        versus = [ratio(of(load[OURS], "rps"), rps), ratio(of(seq[OURS], "p50_ms"), seq_p50)]
        slowest = f"{min(rps) / median(rps):.2f}x" if len(rps) >= 3 else "-"
        hits.append(
            [targets[name].title, f"{median(rps):,.0f}"]
            + [ms(median(of(load[name], f"p{p}_ms"))) for p in (50, 90, 99)]
            + [ms(median(seq_p50)), *(versus if name != OURS else ["-", "-"])]
            + [each(rps), slowest, each(of(load[name], "split"), "")]
        )
    stampedes = [
        [targets[n].title, str(STAMPEDE_CLIENTS), each([r for r, _ in found], "d")]
        + [f"{median(s for _, s in found):.2f}"]
        for n, found in cold.items()
    ]
    return [
        Table(
            f"Hits, medians of {plan.rounds} round(s)",
            "target | req/s | p50 ms | p90 ms | p99 ms | sequential p50 ms"
            " | ours / it, req/s | ours / it, sequential p50 | req/s, round by round"
            " | slowest / median round | connections per worker, mid-run",
            hits,
        ),
        Table(
            "Cold stampede: concurrent requests for one expired pair",
            "target | requests | model runs, per round | seconds to the last answer",
            stampedes,
        ),
    ]


def stampede(target: Target, number: int) -> tuple[int, float]:
    """Many concurrent requests for one cold pair: how many model runs did they cost?"""
    pair = target.pairs[0]
    target.make_cold(pair)
    if target.name == OURS:
        time.sleep(COLD_SETTLE_SECONDS)
    before = target.model_runs(pair)
    try:
        replies = asyncio.run(burst(target.port, f"/predict/{pair}", STAMPEDE_CLIENTS))
    except (OSError, EOFError, TimeoutError) as exc:
        raise Broken(f"{target.title}: stampede: {exc!r}") from None
    time.sleep(0.2)  # log lines are written before their answers; a moment for the pipe
    runs = target.model_runs(pair) - before
    if not (answered := sum(reply.status == 200 for reply in replies)):
        raise Broken(f"{target.title}: no stampede request was answered 200")
    if runs == 0:  # not broken: beat's refresh may have landed between forget and burst
        print(f"warning: {target.title}: the stampede ran no model; the pair was not cold")
    seconds = max(reply.seconds for reply in replies)
    print(f"stampede {number + 1} {target.name}: {runs} model runs, {answered} answered 200")
    return runs, seconds


def steady_phase(bench: Bench) -> list[Table]:
    """Load across every pair for a long run while predictions expire and refresh."""
    plan, pairs_file, ttl = bench.plan, bench.pairs_file(PAIRS), STEADY_TTL_SECONDS
    settings = {"PREDICTION_TTL_SECONDS": f"{ttl:g}", "REFRESH_INTERVAL_SECONDS": f"{ttl / 3:.3f}"}
    targets = {name: bench.target(name, settings).start("steady") for name in plan.steady_targets}
    loads: defaultdict[str, list[WrkResult]] = defaultdict(list)
    computed: defaultdict[str, list[int]] = defaultdict(list)
    for number in range(plan.steady_rounds):
        for name in rotated(plan.steady_targets, number):
            targets[name].warm()
            before = targets[name].model_runs()
            loads[name].append(bench.run(targets[name], pairs_file, plan.steady_seconds))
            computed[name].append(targets[name].model_runs() - before)
            print(f"steady {number + 1} {name}: {loads[name][-1]}")
    for target in targets.values():
        target.stop()
    rows = [
        [targets[name].title, f"{median(of(found, 'rps')):,.0f}"]
        + [ms(median(of(found, "p50_ms"))), ms(median(of(found, "p99_ms")))]
        + [f"{median(r.p99_ms / r.p50_ms for r in found):.1f}", each(of(found, "misses"), "d")]
        + [each(computed[name], "d"), each([r.non_2xx + r.errors for r in found], "d")]
        + [each(of(found, "split"), "")]
        for name, found in loads.items()
    ]
    header = "target | req/s | p50 ms | p99 ms | p99 / p50 | waited for the model"
    header += " | model runs in the server | errors | connections per worker"
    return [Table(f"Steady state under load, predictions expiring after {ttl:g} s", header, rows)]


def scaling_phase(bench: Bench) -> list[Table]:
    header = "pairs | registry load s | refresh s | Redis used MB | hit p50 ms | vs 4 pairs"
    header += " | vs 4 pairs, same 4 asked | req/s at random | 4-pair API req/s"
    header += " | at random vs 4 pairs | req/s in turn | workers that read every pair"
    header += " | API worker RSS MiB (* started since) | pool RSS MiB"
    rows = [measure_point(bench, count) for count in bench.plan.scale_points]
    return [Table("Pairs scaling, model latency 0", header, rows)]


def scale_pairs(count: int) -> list[str]:
    """``count`` pairs: the default pairs first, then P0-USD, P1-USD..."""
    return [*PAIRS[:count], *(f"P{i}-USD" for i in range(count - len(PAIRS)))]


def measure_point(bench: Bench, count: int) -> list[str]:
    """Our stack with ``count`` pairs loaded into the registry: refresh times, then hits
    alternating with an API of 4 pairs (a cache of its own); RSS last, after a load run
    across every pair in turn."""
    plan, few, pairs = bench.plan, list(PAIRS), scale_pairs(count)
    all_file, few_file = bench.pairs_file(pairs), bench.pairs_file(few)
    bench.redis_server.client().flushall()
    target = bench.target(OURS, SCALE_SETTINGS, pairs, registry=True)
    loaded = target.load_registry(all_file)  # before the start: no process seeds PAIRS
    target.start(f"scale-{count}", beat=False)
    # Each job of FIGURES: the API, its pairs, and whether loaded at random (else sequential).
    jobs: dict[str, tuple[Target, Path, bool]] = {"all": (target, all_file, False)}
    if count > len(few):  # the 4-pair API, on a database of its own: its own registry
        reference = bench.target(OURS, SCALE_SETTINGS, few, database=REFERENCE_DATABASE)
        reference.start(f"{count}-4", worker=False)
        jobs["4"], jobs["same 4"] = (reference, few_file, False), (target, few_file, False)
        jobs["random"], jobs["4 loaded"] = (target, all_file, True), (reference, few_file, True)
    celery = celery_app(target)
    found: defaultdict[str, list[WrkResult]] = defaultdict(list)
    try:
        timed_refresh(celery, target)  # the first also loads the model in every pool process
        refreshes = [timed_refresh(celery, target) for _ in range(plan.scale_repeats)]
        used_mb = int(bench.redis_server.client().info("memory")["used_memory"]) / 1e6
        filling = time.perf_counter()
        filled = f"{asyncio.run(fill(target, pairs))} in {time.perf_counter() - filling:.1f} s"
        readers = set(target.connections())  # gunicorn recycles a worker after max_requests
        if count > len(few):
            asyncio.run(fill(reference, few))  # computed on a miss, its first ask
        for number in range(plan.scale_rounds):
            for key, (api, file, loaded_) in rotated(list(jobs.items()), number):
                seconds = plan.load_seconds if loaded_ else 0
                found[key].append(bench.run(api, file, seconds, at_random=loaded_))
        in_turn = bench.run(target, all_file, plan.load_seconds)
        api_rss = rss_mib(target.server.pid)
        pool_rss = list(rss_mib(target.worker.pid).values()) if target.worker else []
    finally:
        celery.close()
        for api, _, _ in jobs.values():
            api.stop()
    p50, rps = ({k: of(found[k], f) for k in FIGURES} for f in ("p50_ms", "rps"))
    row = [f"{count:,}", f"{loaded:.2f}", each(refreshes, ".3f"), f"{used_mb:.2f}"]
    row += [ms(median(p50["all"])), ratio(p50["all"], p50["4"]), ratio(p50["same 4"], p50["4"])]
    row += [each(rps["random"]), each(rps["4 loaded"]), ratio(rps["random"], rps["4 loaded"])]
    rss = "; ".join(f"{mib:.0f}{'' if pid in readers else '*'}" for pid, mib in api_rss.items())
    row += [f"{in_turn.rps:,.0f}", filled, rss, each(pool_rss, ".0f")]
    bench.scaled[count] = {"rss": max(api_rss.values(), default=0), "random vs 4": row[9]}
    print(f"scale {count:>6} pairs: " + "  ".join(row[1:]))
    return row


def celery_app(target: Target) -> Celery:
    """A client of the target's broker, to send refreshes as beat would."""
    broker = Settings(redis_url=target.env["REDIS_URL"]).broker_url  # as the worker reads it
    broker = target.env.get("CELERY_BROKER_URL", broker)
    celery = Celery("bench", broker=broker, set_as_current=False)
    celery.conf.broker_connection_retry_on_startup = True
    return celery


def refresh_timeout(count: int) -> float:
    """Long enough for one worker process to refresh ``count`` pairs on a busy machine."""
    return REFRESH_TIMEOUT_SECONDS + count * 0.005


def clear_predictions(target: Target) -> None:
    """Delete the pairs' predictions and this interval's refresh slot, keeping the
    registry: the next refresh_all runs, and has every pair to write."""
    client = target.redis
    interval = float(target.env["REFRESH_INTERVAL_SECONDS"])
    seconds, _ = client.time()
    slot = int(seconds // interval)
    doomed = [refresh_slot_key(s, interval) for s in (slot - 1, slot, slot + 1)]
    doomed += [prediction_key(pair, OURS_VERSION) for pair in target.pairs]
    pipe = client.pipeline(transaction=False)
    for first in range(0, len(doomed), 10_000):
        pipe.unlink(*doomed[first : first + 10_000])
    pipe.execute()


def timed_refresh(celery: Celery, target: Target) -> float:
    """Seconds from sending refresh_all, as beat would, to the last pair's computed_at."""
    clear_predictions(target)
    timeout = refresh_timeout(len(target.pairs))
    before = target.redis.dbsize()  # the registry's keys and the model's, still there
    sent = time.time()
    celery.send_task(REFRESH_ALL_TASK, expires=timeout)
    # DBSIZE is O(1): polled without stealing the worker's CPU; then MGET of every pair.
    keys = [prediction_key(pair, OURS_VERSION) for pair in target.pairs]
    what = f"refresh of {len(keys)} pairs"
    wait_for(lambda: target.redis.dbsize() >= before + len(keys), timeout, 0.005, what)
    chunks = [keys[first : first + 10_000] for first in range(0, len(keys), 10_000)]

    def every_pair() -> list[bytes] | None:
        found = [value for chunk in chunks for value in target.redis.mget(chunk)]
        return cast(list[bytes], found) if all(found) else None

    stored = cast(list[bytes], wait_for(every_pair, timeout, 0.05, what))
    last = max(orjson.loads(value)["computed_at"] for value in stored)
    return datetime.fromisoformat(last).timestamp() - sent


async def fill(target: Target, pairs: Sequence[str]) -> int:
    """Have every API worker process serve every pair, as random clients would in time
    (a near copy follows the write feed once its process read the pair), on connections
    pinned to each worker (FILL_CONNECTIONS, each walking its share of the pairs): its
    RSS is then its whole cost of N pairs. How many did."""
    workers = len(target.connections())
    held: defaultdict[int, list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]
    held = defaultdict(list)
    for _ in range(20 * workers * FILL_CONNECTIONS):
        if len(held) == workers and all(len(c) == FILL_CONNECTIONS for c in held.values()):
            break
        reader, writer = await asyncio.open_connection(HOST, target.port)
        await ask(target, reader, writer, pairs[:1])  # answered: accepted by a worker
        mine, tcp = writer.get_extra_info("sockname")[1], target.connections()
        pid = next((p for p in tcp if any(c.raddr and c.raddr.port == mine for c in tcp[p])), 0)
        if pid and len(held[pid]) < FILL_CONNECTIONS:
            held[pid].append((reader, writer))
        else:
            writer.close()
    await asyncio.sleep(0.5)  # a process subscribes to the write feed on its first request

    async def walk(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, share: Sequence[str]
    ) -> None:
        for start in range(0, len(share), FILL_DEPTH):
            await ask(target, reader, writer, share[start : start + FILL_DEPTH])

    walks = []
    for connections in held.values():
        size = -(-len(pairs) // len(connections))
        for number, connection in enumerate(connections):
            walks.append(walk(*connection, pairs[number * size : (number + 1) * size]))
    try:
        await asyncio.gather(*walks)
    finally:
        for connections in held.values():
            for _, writer in connections:
                writer.close()
    return sum(bool(connections) for connections in held.values())


async def ask_all(target: Target, pairs: Sequence[str]) -> None:
    """Every pair asked once, on one connection, FILL_DEPTH at a time."""
    reader, writer = await asyncio.open_connection(HOST, target.port)
    try:
        for start in range(0, len(pairs), FILL_DEPTH):
            await ask(target, reader, writer, pairs[start : start + FILL_DEPTH])
    finally:
        writer.close()


async def ask(
    target: Target, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pairs: Sequence[str]
) -> None:
    """GET every pair on one connection, pipelined; every answer must be a 200."""
    writer.write(b"".join(request_bytes(f"/predict/{pair}", keep_alive=True) for pair in pairs))
    await writer.drain()
    for _ in pairs:
        if (reply := await read_reply(reader, time.perf_counter())).status != 200:
            raise Broken(f"{target.title}: answered {reply.status} while filling")
