"""`make bench` / `make bench-quick`: our API against the alternatives, in one run.

    python -m scripts.bench.run            # full: 5 rounds; writes docs/performance.md
    python -m scripts.bench.run --quick    # about 3 minutes; writes .run/bench/ only
    python -m scripts.bench.run --only many_pairs   # one phase; writes .run/bench/ only

Exits non-zero only when the benchmark itself is broken (wrk missing, a target that
does not start or answers errors, output that cannot be read, a leftover), never on a
timing: the goals are prose in docs/performance.md, kept above the run's tables.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.metadata
import os
import platform
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from predictions.settings import Settings
from scripts.bench import wrk
from scripts.bench.many_pairs import many_pairs_phase
from scripts.bench.phases import Bench, Plan, Table, hit_phase, scaling_phase, steady_phase
from scripts.bench.targets import ALL, BASELINE_GUNICORN, COMPUTING, OURS, Broken
from scripts.embedded_redis import find_redis_server
from tests.harness.processes import MARKER, ROOT, RedisServer, new_run_id, processes_with_marker

FULL = Plan(
    mode="full", rounds=5, sequential_seconds=3, load_seconds=5,
    steady_rounds=3, steady_seconds=60, steady_targets=COMPUTING,
    scale_points=(1, 10, 100, 1_000, 10_000, 100_000), scale_repeats=3, scale_rounds=3,
    targets=ALL, registry_pairs=100_000, registry_rounds=3, asked_pairs=1_000,
    asked_interval_seconds=5, asked_intervals=4, cold_start_pairs=10_000,
)  # fmt: skip
# About 3 minutes (CI): 3 hit rounds (the fewest with a slowest round), the rest trimmed;
# the many-pairs phase at 10,000 pairs, once.
QUICK = Plan(
    mode="quick", rounds=3, sequential_seconds=1, load_seconds=3,
    steady_rounds=1, steady_seconds=10, steady_targets=(OURS,),
    scale_points=(10_000,), scale_repeats=1, scale_rounds=2, targets=ALL[:4],  # no floor-get
    registry_pairs=10_000, registry_rounds=1, asked_pairs=100,
    asked_interval_seconds=2, asked_intervals=2, cold_start_pairs=10_000,
)  # fmt: skip
PHASES = (hit_phase, steady_phase, scaling_phase, many_pairs_phase)
PACKAGES = """flask werkzeug gunicorn gevent redis hiredis orjson celery kombu numpy fastapi
    starlette uvicorn uvloop httptools flask-caching psutil""".split()
# docs/performance.md's prose (goals, method) is written by hand; below it, the run's.
REPORT = ROOT / "docs" / "performance.md"
TABLES_BELOW = "<!-- Below this line: written by `make bench`. -->"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 3 minutes (CI)")
    parser.add_argument(
        "--only", choices=[p.__name__.removesuffix("_phase") for p in PHASES],
        help="run one phase; writes .run/bench/ only",
    )  # fmt: skip
    args = parser.parse_args(argv)
    plan, only = QUICK if args.quick else FULL, args.only
    if only is None and plan is FULL:
        output = REPORT
    else:
        output = ROOT / ".run" / "bench" / "performance.md"
    try:
        wrk.find_wrk()
        prose, below, _ = REPORT.read_text().partition(TABLES_BELOW)
        if not below:
            raise Broken(f"{REPORT} lacks the line {TABLES_BELOW!r}")
    except (wrk.WrkError, Broken, OSError) as exc:
        print(f"BROKEN: {exc}", file=sys.stderr)
        return 2
    started_at, run_id = time.monotonic(), new_run_id()
    os.environ[MARKER] = run_id  # inherited by every process of the run, Redis's too
    work_dir = ROOT / ".run" / "bench" / f"{plan.mode}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    work_dir.mkdir(parents=True, exist_ok=True)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress, as it goes
    print(f"benchmark ({plan.mode}): logs in {work_dir.relative_to(ROOT)}")
    bench = Bench(plan, RedisServer(work_dir / "redis-data", work_dir), work_dir, run_id)
    tables: list[Table] = []
    broken = None
    try:
        bench.redis_server.start()
        facts = environment(plan)
        if os.getloadavg()[0] > 0.5:  # the ratios share the noise; the absolute figures do not
            print(f"warning: the machine is busy (load {facts['load average at start']})")
        for phase in PHASES:
            if only is None or phase.__name__ == f"{only}_phase":
                tables += phase(bench)
    except (Broken, wrk.WrkError, TimeoutError, OSError) as exc:
        broken = f"{type(exc).__name__}: {exc}"
    except KeyboardInterrupt:
        broken = "interrupted"
    finally:
        for target in bench.started:
            target.stop()
        bench.redis_server.stop()
        if (leftovers := stop_leftovers(run_id)) and broken is None:
            broken = f"processes left running after the run (killed): {leftovers}"
    if broken is not None:
        print(f"BROKEN: {broken} (logs in {work_dir})", file=sys.stderr)
        return 1
    seconds = time.monotonic() - started_at
    facts["load average at end"] = load_average()
    tables.append(Table("Settings, machine and versions", " | ", list(map(list, facts.items()))))
    print("\n\n".join(f"--- {table.title}\n{table.markdown()}" for table in tables))
    written = [
        prose + TABLES_BELOW + "\n",
        f"Written by `make bench` ({plan.mode} mode, {seconds:.0f} s); the load generator "
        "(wrk) shared the machine with the servers.\n",
        *(f"## {table.title}\n\n{table.markdown()}\n" for table in tables),
    ]
    output.write_text("\n".join(written))
    print(f"wrote {output} in {seconds:.0f} s")
    return 0


def stop_leftovers(run_id: str) -> list[int]:
    """Kill, by PID, any process of this run still alive; return their PIDs."""
    deadline = time.monotonic() + 5
    while (pids := processes_with_marker(run_id)) and time.monotonic() < deadline:
        time.sleep(0.1)  # children of a stopped group may take a moment to be reaped
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


def load_average() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def environment(plan: Plan) -> dict[str, str]:
    """The plan, the settings ours ran with, the machine and the versions."""
    cpus = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in line]
    found = {
        "plan": ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(plan).items()),
        "API workers (ours, Flask baselines)": str(Settings().api_workers),
        "Flask baselines": " ".join(f"{k} {v}" for k, v in BASELINE_GUNICORN.items()),
        "CPU": f"{cpus[0].split(':', 1)[1].strip() if cpus else 'unknown'}, {os.cpu_count()} cores",
        "kernel": platform.release(),
        "load average at start": load_average(),
        "Python": platform.python_version(),
    }
    for name in PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[name] = importlib.metadata.version(name)
    for argv in ([find_redis_server(), "--version"], [wrk.find_wrk(), "--version"]):
        # wrk --version exits 1 after printing its version: read the output regardless.
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        found[Path(argv[0]).name] = (done.stdout or done.stderr).strip().splitlines()[0]
    return found


if __name__ == "__main__":
    sys.exit(main())
