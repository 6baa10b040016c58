"""`make bench` / `make bench-quick`: our API against the alternatives, in one run.

    python -m scripts.bench.run            # full: 5 rounds; writes docs/performance.md + .png
    python -m scripts.bench.run --quick    # about 3 minutes; writes .run/bench/ only

Starts a redis-server, our stack and each baseline on free ports of 127.0.0.1, loads
them with wrk, stops every process by PID and checks that none is left. Prints the
ratios and PASS or FALL SHORT for each target of the issue. Exits 0 whatever the
verdicts; non-zero only when the benchmark itself is broken (wrk missing, a target
that does not start or answers errors, output that cannot be parsed, a leftover).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from predictions.settings import DEFAULT_PAIRS
from scripts.bench import report, wrk
from scripts.bench.judge import judge
from scripts.bench.phases import (
    Broken,
    Plan,
    StartFailed,
    hit_phase,
    scaling_phase,
    steady_phase,
)
from scripts.bench.results import FLASK_CACHING, FLOOR, FLOOR_GET, OURS, SEED, Results
from scripts.bench.scaling import write_pairs_file
from scripts.bench.targets import BASELINE_GUNICORN, Target, base_env
from tests.harness.processes import MARKER, ROOT, RedisServer, new_run_id, processes_with_marker

ALL_TARGETS = (OURS, FLASK_CACHING, SEED, FLOOR, FLOOR_GET)
COMPARED_UNDER_EXPIRY = (OURS, FLASK_CACHING, SEED)
FULL = Plan(
    mode="full",
    # Five interleaved rounds: enough for "every round >= 0.8x the median round" to see
    # a round whose connections piled onto one worker.
    rounds=5,
    sequential_seconds=3,
    load_seconds=5,
    steady_rounds=3,
    steady_seconds=60,
    steady_targets=COMPARED_UNDER_EXPIRY,
    scale_points=(1, 10, 100, 1_000, 10_000),
    scale_repeats=3,
    scale_rounds=3,
    scale_hit_seconds=3,
    scale_load_seconds=5,
    targets=ALL_TARGETS,
)
# About 3 minutes in all (CI runs it): three short hit rounds (the fewest that say
# anything of the slowest round), steady state for ours only (its targets are about
# ours), scaling at 10,000 pairs only (the point) in two rounds.
QUICK = Plan(
    mode="quick",
    rounds=3,
    sequential_seconds=1,
    load_seconds=3,
    steady_rounds=1,
    steady_seconds=10,
    steady_targets=(OURS,),
    scale_points=(10_000,),
    scale_repeats=1,
    scale_rounds=2,
    scale_hit_seconds=1,
    scale_load_seconds=2,
    targets=(OURS, FLASK_CACHING, SEED, FLOOR),
)
PACKAGES = (
    "flask", "werkzeug", "gunicorn", "redis", "hiredis", "orjson", "celery", "kombu",
    "numpy", "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "flask-caching",
    "psutil", "matplotlib",
)  # fmt: skip


def log(message: str) -> None:
    print(message, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="three short rounds (CI)")
    parser.add_argument("--output", type=Path, help="the Markdown report (PNG beside it)")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    default_output = ROOT / "docs" if plan is FULL else ROOT / ".run" / "bench"
    output: Path = args.output or default_output / "performance.md"
    try:
        wrk.find_wrk()
    except wrk.WrkError as exc:
        print(f"BROKEN: {exc}", file=sys.stderr)
        return 2

    started_at = time.monotonic()
    run_id = new_run_id()
    # Inherited by the Redis server too: every process of this run carries the marker.
    os.environ[MARKER] = run_id
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    work_dir = ROOT / ".run" / "bench" / f"{plan.mode}-{stamp}"
    work_dir.mkdir(parents=True, exist_ok=True)
    log(f"benchmark ({plan.mode}): logs in {work_dir.relative_to(ROOT)}")
    results = Results(mode=plan.mode, targets=list(plan.targets), rounds=plan.rounds)
    pairs_file = write_pairs_file(list(DEFAULT_PAIRS), work_dir / "pairs.txt")
    redis_server = RedisServer(work_dir / "redis-data", work_dir)
    started: list[Target] = []

    def make(name: str, settings: dict[str, str]) -> Target:
        return Target(name, redis_server, work_dir, DEFAULT_PAIRS, run_id, settings)

    broken: str | None = None
    try:
        redis_server.start()
        results.machine = machine()
        if os.getloadavg()[0] > 0.5:
            # Not a failure: the ratios share the noise, but the absolute figures do not.
            log(f"warning: the machine is busy (load {load_average()}): figures will be noisy")
        results.versions = versions()
        results.settings = bench_settings(plan, redis_server, run_id)
        hit_phase(plan, make, pairs_file, results, started, log)
        steady_phase(plan, make, pairs_file, results, started, log)
        scaling_phase(plan, redis_server, work_dir, run_id, results, log)
    except (StartFailed, Broken, wrk.WrkError, TimeoutError, OSError) as exc:
        broken = f"{type(exc).__name__}: {exc}"
    except KeyboardInterrupt:
        broken = "interrupted"
    finally:
        for target in started:
            target.stop()
        redis_server.stop()
        leftovers = stop_leftovers(run_id)
        if leftovers and broken is None:
            broken = f"processes left running after the run (killed): {leftovers}"
    if broken is not None:
        print(f"BROKEN: {broken} (logs in {work_dir})", file=sys.stderr)
        return 1

    results.seconds = time.monotonic() - started_at
    results.machine["load average at end (1, 5, 15 min)"] = load_average()
    verdicts = judge(results.measured())
    print(report.render_text(results, verdicts))
    output.parent.mkdir(parents=True, exist_ok=True)
    chart = output.with_suffix(".png")
    report.draw_chart(results, chart)
    output.write_text(report.render_markdown(results, verdicts, chart.name))
    log(f"wrote {output} and {chart} in {results.seconds:.0f} s")
    return 0


def stop_leftovers(run_id: str) -> list[int]:
    """Kill, by PID, any process of this run still alive; return their PIDs."""
    deadline = time.monotonic() + 5
    while (pids := processes_with_marker(run_id)) and time.monotonic() < deadline:
        time.sleep(0.1)  # children of a stopped group may take a moment to be reaped
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return pids


def machine() -> dict[str, str]:
    cpu = "unknown"
    memory = "unknown"
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
        kib = next(
            line.split()[1]
            for line in Path("/proc/meminfo").read_text().splitlines()
            if line.startswith("MemTotal")
        )
        memory = f"{int(kib) / 1024 / 1024:.1f} GiB"
    except (OSError, StopIteration):
        pass
    return {
        "CPU": cpu,
        "cores": str(os.cpu_count()),
        "memory": memory,
        "kernel": platform.release(),
        "OS": platform.platform(terse=True),
        "load average at start (1, 5, 15 min)": load_average(),
    }


def load_average() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def versions() -> dict[str, str]:
    found = {"Python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    found["redis-server"] = _first_line([_redis_server(), "--version"])
    found["wrk"] = _first_line([wrk.find_wrk(), "--version"])
    return found


def _redis_server() -> str:
    from scripts.embedded_redis import find_redis_server

    return find_redis_server()


def _first_line(argv: list[str]) -> str:
    # wrk --version exits 1 after printing its version: read the output regardless.
    done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    return (done.stdout or done.stderr).strip().splitlines()[0]


def bench_settings(plan: Plan, redis_server: RedisServer, run_id: str) -> dict[str, str]:
    """The plan, and the gunicorn settings ours and the baselines run under, as read."""
    env = base_env(run_id, REDIS_URL=redis_server.url)
    code = (
        "import json, runpy; ns = runpy.run_path('gunicorn.conf.py'); "
        "print(json.dumps({k: v for k, v in ns.items() if not k.startswith('_') "
        "and isinstance(v, (bool, int, float, str, list))}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30
    )
    if done.returncode != 0:
        raise Broken(f"cannot read gunicorn.conf.py: {done.stderr[-300:]}")
    gunicorn = json.loads(done.stdout)
    gunicorn.pop("bind", None)  # a free port per target
    baselines = {**gunicorn, **BASELINE_GUNICORN}
    return {
        "mode": plan.mode,
        "rounds (hit phase)": str(plan.rounds),
        "sequential hit latency": f"wrk -t1 -c1, {plan.sequential_seconds:g} s per target",
        "load": f"wrk -t{plan.threads} -c{plan.connections}, {plan.load_seconds:g} s per target",
        "steady state": (
            f"wrk -t{plan.threads} -c{plan.connections}, {plan.steady_seconds:g} s per target, "
            f"{plan.steady_rounds} round(s), expiry {plan.steady_ttl_seconds:g} s for every "
            f"target (ours refreshing every {plan.steady_ttl_seconds / 3:.2f} s)"
        ),
        "stampede": f"{plan.stampede_clients} concurrent requests on one cold pair",
        "pairs": ",".join(DEFAULT_PAIRS),
        "model latency": "SIMULATED_MODEL_LATENCY_SECONDS default (1 s); 0 in the scaling phase",
        "scaling": (
            f"{', '.join(f'{n:,}' for n in plan.scale_points)} pairs; "
            f"{plan.scale_repeats} timed refresh(es) each; every API worker then reads every "
            f"pair once; hit p50 in {plan.scale_rounds} round(s) of wrk -t1 -c1 "
            f"{plan.scale_hit_seconds:g} s (pairs in turn), and throughput in "
            f"{plan.scale_rounds} round(s) of wrk -t{plan.threads} -c{plan.connections} "
            f"{plan.scale_load_seconds:g} s (pairs at random), each alternating with a "
            "4-pair API on the same cache"
        ),
        report.GUNICORN_OURS: ", ".join(f"{k}={v}" for k, v in gunicorn.items()),
        report.GUNICORN_BASELINES: ", ".join(f"{k}={v}" for k, v in baselines.items()),
        "seed-style FastAPI": "uvicorn, 1 process, uvloop + httptools, no access log",
    }


if __name__ == "__main__":
    sys.exit(main())
