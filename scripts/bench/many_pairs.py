"""The many-pairs phase: what the pair registry costs with ``plan.registry_pairs`` pairs
(100,000 in full mode), each figure beside its goal in docs/performance.md.

- loading the registry with the pairs command;
- a refresh of every pair (PRECOMPUTE=all, model latency 0) by one worker process and by
  two, in interleaved rounds, while an API follows the write feed; that API's CPU
  during each refresh is the feed's cost to an API process;
- one /metrics scrape;
- PRECOMPUTE=asked with a few pairs asked through the API: pairs refreshed per
  interval, read from the worker's own metrics;
- an API process just started, over ``plan.cold_start_pairs`` pairs at random: its
  rate in its first seconds against its rate once warm.

The scaling phase's row for the same count gives the rest (RSS, hits at random).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Sequence
from statistics import median

import urllib3

from beat_schedule import REFRESH_BATCH_TASK
from predictions.settings import Settings
from scripts.bench.phases import (
    SCALE_SETTINGS,
    Bench,
    Table,
    ask_all,
    celery_app,
    each,
    fill,
    rotated,
    scale_pairs,
    timed_refresh,
)
from scripts.bench.targets import OURS, Broken, Target
from scripts.bench.wrk import WrkResult
from tests.harness.processes import wait_for

# Two worker processes on this Redis, each with a broker database of its own, so that
# both stay up (their models loaded once) and the driver chooses which one refreshes.
BROKER_DATABASES = {1: 7, 2: 8}
# PRECOMPUTE=asked: short intervals, so that a few of them fit in the phase.
ASKED_SETTINGS = {
    "SIMULATED_MODEL_LATENCY_SECONDS": "0", "PRECOMPUTE": "asked",
    "PREDICTION_TTL_SECONDS": "30",
}  # fmt: skip
METRICS_SCRAPES = 5
IDLE_SECONDS = 5  # an API's CPU idle, to set against its CPU while following a refresh
WRITTEN = 'prediction_refreshed_pairs_total{result="written"}'
TASKS = "prediction_refresh_duration_seconds_count"


def many_pairs_phase(bench: Bench) -> list[Table]:
    plan = bench.plan
    count, pairs = plan.registry_pairs, scale_pairs(plan.registry_pairs)
    pairs_file = bench.pairs_file(pairs)
    client = bench.redis_server.client()
    rows: list[list[str]] = []

    def add(figure: str, goal: str, values: Sequence[float], spec: str, unit: str = "") -> None:
        middle = f"{median(values):{spec}}{unit}" if values else "-"
        rows.append([figure, goal, middle, each(values, spec)])
        print(f"{count:,} pairs: {figure}: {middle} ({each(values, spec)})")

    api = bench.target(OURS, SCALE_SETTINGS, pairs, registry=True)
    loads = []
    for _ in range(plan.registry_rounds):
        client.flushall()
        loads.append(api.load_registry(pairs_file))
    add(f"`pairs load` of {count:,} pairs, s", "< 10 s", loads, ".2f")

    found = refreshes(bench, api, pairs)
    one, two = found.by_processes[1], found.by_processes[2]
    add(f"refresh of {count:,} pairs, 1 worker process, s", "-", one, ".1f")
    add(f"refresh of {count:,} pairs, 2 worker processes, s", "-", two, ".1f")
    halved = [b / a for a, b in zip(one, two, strict=True)]
    add("2 processes / 1, per round", "about 0.5x", halved, ".2f", "x")
    add("refresh cost per pair, one process, ms", "-", [s / count * 1000 for s in one], ".3f")
    add("refresh by 2 processes, 2 API processes following, s", "-", found.following, ".1f")
    feed = [cpu for round_ in found.feed_cpu for cpu in round_]
    idle = [cpu for round_ in found.idle_cpu for cpu in round_]
    add("feed: API worker CPU during that refresh, s (each)", "bounded", feed, ".2f")
    add("the same API workers idle as long, CPU s (each)", "-", idle, ".2f")
    per_write = [(f - i) / count * 1e6 for f, i in zip(feed, idle, strict=True)]
    add("feed: API worker CPU per write published, µs", "-", per_write, ".1f")
    rounds = zip(found.following, found.feed_cpu, found.idle_cpu, strict=True)
    shares = [
        (f - i) / seconds * 100
        for seconds, cpus, idles in rounds
        for f, i in zip(cpus, idles, strict=True)
    ]
    add("feed: share of a core per API worker while refreshing, %", "-", shares, ".0f", "%")

    scrapes = scrape_times(api)
    add(f"one /metrics scrape at {count:,} pairs, s", "< 1 s", scrapes, ".3f")
    api.stop()

    scaled = bench.scaled.get(count, {})
    if scaled:
        rows.append(
            ["API worker RSS after every pair asked, MiB (largest; scaling table)", "< 150"]
            + [f"{scaled['rss']:.0f}", "-"]
        )
        rows.append(
            ["hits at random over every pair vs over 4 (scaling table)", ">= 0.8x"]
            + [str(scaled["random vs 4"]), "-"]
        )

    asked = min(plan.asked_pairs, count)
    per_interval, tasks = asked_refreshes(bench, pairs, asked)
    add(f"PRECOMPUTE=asked, {asked:,} asked: pairs refreshed per interval", f"about {asked:,}",
        per_interval, ",.0f")  # fmt: skip
    add("PRECOMPUTE=asked: refresh tasks per interval", "-", tasks, ",.0f")

    cold, warm = cold_start(bench, plan.cold_start_pairs)
    starts = plan.cold_start_pairs
    add(f"API just started, {starts:,} pairs at random, req/s", "-", of_rps(cold), ",.0f")
    add("the same API once warm, req/s", "-", of_rps(warm), ",.0f")
    started_vs_warm = [c.rps / w.rps for c, w in zip(cold, warm, strict=True)]
    add("just started / warm, per round", ">= 0.8x", started_vs_warm, ".2f", "x")
    title = f"Many pairs: {count:,} in the registry, medians of {plan.registry_rounds} round(s)"
    return [Table(title, "figure | goal | median | round by round", rows)]


def of_rps(results: Sequence[WrkResult]) -> list[float]:
    return [result.rps for result in results]


@dataclasses.dataclass
class Refreshes:
    """Refresh times (s) and, for those an API followed, its worker processes' CPU (s)."""

    by_processes: dict[int, list[float]]  # worker processes -> each round's time
    following: list[float]  # by two processes, while an API follows the feed
    feed_cpu: list[list[float]]  # each API worker's CPU during each of those
    idle_cpu: list[list[float]]  # each API worker's CPU, idle as long, just before


def refreshes(bench: Bench, api: Target, pairs: list[str]) -> Refreshes:
    """Refresh every pair by one worker process and by two, rounds interleaved, no API
    running; then by two while an API follows the write feed, its near copies filled,
    with its worker processes' CPU during each refresh and idle just before."""
    plan = bench.plan
    redis_url = api.env["REDIS_URL"].rsplit("/", 1)[0]
    workers = {
        processes: bench.target(
            OURS, {**SCALE_SETTINGS, "WORKER_CONCURRENCY": str(processes),
                   "CELERY_BROKER_URL": f"{redis_url}/{broker}"},
            pairs, registry=True,
        ).start(f"many-{len(pairs)}-c{processes}", beat=False, api=False)
        for processes, broker in BROKER_DATABASES.items()
    }  # fmt: skip
    celeries = {processes: celery_app(worker) for processes, worker in workers.items()}
    found = Refreshes({processes: [] for processes in workers}, [], [], [])
    try:
        # Untimed: the two-process worker fills the cache and loads its model; the
        # other loads its model on a small batch.
        timed_refresh(celeries[2], workers[2])
        celeries[1].send_task(REFRESH_BATCH_TASK, args=[pairs[:10]])
        first_batch = lambda: "refreshed pairs=10 " in workers[1].worker.output()  # type: ignore[union-attr]  # noqa: E731
        wait_for(first_batch, 60, 0.1, "the one-process worker's first batch")
        for number in range(plan.registry_rounds):
            for processes in rotated(list(workers), number):
                seconds = timed_refresh(celeries[processes], workers[processes])
                found.by_processes[processes].append(seconds)
                print(f"refresh by {processes} worker process(es): {seconds:.1f} s")
        # Every API process subscribes to the feed and fills its near copies.
        api.start(f"many-{len(pairs)}-api", worker=False)
        asyncio.run(fill(api, pairs[:1]))
        filled = lambda: api.server.count("near copies filled") >= Settings().api_workers  # noqa: E731
        wait_for(filled, 120, 0.1, "every API process filled its near copies")
        for _ in range(plan.registry_rounds):
            idle = api.cpu_seconds()
            time.sleep(IDLE_SECONDS)
            before = api.cpu_seconds()
            found.following.append(seconds := timed_refresh(celeries[2], workers[2]))
            after = api.cpu_seconds()
            scale = seconds / IDLE_SECONDS  # idle CPU over as long as the refresh took
            found.idle_cpu.append([(b - a) * scale for a, b in zip(idle, before, strict=True)])
            found.feed_cpu.append([b - a for a, b in zip(before, after, strict=True)])
            cpu, idle_cpu = each(found.feed_cpu[-1], ".2f"), each(found.idle_cpu[-1], ".2f")
            print(f"refresh, the API following: {found.following[-1]:.1f} s, its CPU {cpu} s"
                  f" (idle {idle_cpu} s)")  # fmt: skip
    finally:
        for celery in celeries.values():
            celery.close()
        for worker in workers.values():
            worker.stop()
    return found


def scrape_times(api: Target) -> list[float]:
    """Seconds each of a few /metrics scrapes took."""
    http = urllib3.PoolManager(retries=False, timeout=30)
    seconds = []
    for _ in range(METRICS_SCRAPES):
        started = time.perf_counter()
        response = http.request("GET", f"{api.url}/metrics")
        seconds.append(time.perf_counter() - started)
        if response.status != 200 or b"prediction_pairs" not in response.data:
            raise Broken(f"{api.title}: /metrics answered {response.status}")
    http.clear()
    return seconds


def asked_refreshes(bench: Bench, pairs: list[str], asked: int) -> tuple[list[float], list[float]]:
    """PRECOMPUTE=asked with every pair registered and ``asked`` of them asked through
    the API (again each interval, as clients would): pairs written and refresh tasks
    per interval, from the worker's metrics, over plan.asked_intervals intervals."""
    plan = bench.plan
    interval = plan.asked_interval_seconds
    settings = {**ASKED_SETTINGS, "REFRESH_INTERVAL_SECONDS": f"{interval:g}"}
    bench.redis_server.client().flushall()
    target = bench.target(OURS, settings, pairs, registry=True)
    target.load_registry(bench.pairs_file(pairs))
    target.start(f"asked-{len(pairs)}")
    # Spread over the registry, not its first pairs: nothing in the order helps.
    wanted = pairs[:: max(1, len(pairs) // asked)][:asked]
    written, tasks = [], []
    try:
        asyncio.run(ask_all(target, wanted))  # computed on their first ask (MISS)
        previous = at_interval_middle(interval, target.worker_metrics)
        for _ in range(plan.asked_intervals):
            asyncio.run(ask_all(target, wanted))
            now = at_interval_middle(interval, target.worker_metrics)
            written.append(now.get(WRITTEN, 0) - previous.get(WRITTEN, 0))
            tasks.append(now.get(TASKS, 0) - previous.get(TASKS, 0))
            previous = now
            print(f"asked: {written[-1]:.0f} pairs refreshed in an interval of {interval:g} s")
    finally:
        target.stop()
    return written, tasks


def at_interval_middle(interval: float, read: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Wait for the middle of the next refresh interval (by the epoch, as the worker
    counts them; its refresh is done by then), then read."""
    now = time.time()
    time.sleep((now // interval + 1.5) * interval - now)
    return read()


def cold_start(bench: Bench, count: int) -> tuple[list[WrkResult], list[WrkResult]]:
    """Rounds of: an API process started on ``count`` cached pairs, loaded at random
    from the moment its workers have loaded the app, then the same load once warm."""
    plan, pairs = bench.plan, scale_pairs(count)
    pairs_file = bench.pairs_file(pairs)
    bench.redis_server.client().flushall()
    worker = bench.target(OURS, SCALE_SETTINGS, pairs, registry=True)
    worker.load_registry(pairs_file)
    worker.start(f"cold-{count}-worker", beat=False, api=False)
    celery = celery_app(worker)
    try:
        timed_refresh(celery, worker)  # every pair cached, for the hour
    finally:
        celery.close()
        worker.stop()
    workers = Settings().api_workers
    cold, warm = [], []
    for number in range(plan.registry_rounds):
        api = bench.target(OURS, SCALE_SETTINGS, pairs, registry=True)
        api.start(f"cold-{count}-{number + 1}", worker=False)
        # Each worker process logs the registry read as it builds the app.
        wait_for(
            lambda api=api: api.server.count("known pairs read") >= workers,  # type: ignore[misc]
            60, 0.02, "every API worker process loaded the app",
        )  # fmt: skip
        cold.append(bench.run(api, pairs_file, plan.load_seconds, at_random=True))
        warm.append(bench.run(api, pairs_file, plan.load_seconds, at_random=True))
        api.stop()
        print(f"cold start {number + 1}: {cold[-1].rps:,.0f} req/s, then {warm[-1].rps:,.0f}")
    return cold, warm
