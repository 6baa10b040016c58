"""`make bench` / `make bench-quick`: our API against the alternatives, in one run.

    python -m scripts.bench.run            # full: 5 rounds; writes docs/performance.md
    python -m scripts.bench.run --quick    # about 3 minutes; writes .run/bench/ only

Starts a redis-server, our stack and each baseline on free ports of 127.0.0.1, loads
them with wrk, stops every process by PID and checks that none is left, and prints the
tables. Exits non-zero only when the benchmark itself is broken (wrk missing, a target
that does not start or answers errors, output that cannot be read, a leftover), never
on a timing: the goals are prose in the report, for a reader to weigh against noise.
"""

from __future__ import annotations

import argparse
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
from scripts.bench.phases import Bench, Broken, Plan, Table, hit_phase, scaling_phase, steady_phase
from scripts.bench.targets import (
    BASELINE_GUNICORN,
    FLASK_CACHING,
    FLOOR,
    FLOOR_GET,
    OURS,
    SEED,
    StartFailed,
)
from scripts.embedded_redis import find_redis_server
from tests.harness.processes import MARKER, ROOT, RedisServer, new_run_id, processes_with_marker

FULL = Plan(
    mode="full", rounds=5, sequential_seconds=3, load_seconds=5,
    steady_rounds=3, steady_seconds=60, steady_targets=(OURS, FLASK_CACHING, SEED),
    scale_points=(1, 10, 100, 1_000, 10_000), scale_repeats=3, scale_rounds=3,
    targets=(OURS, FLASK_CACHING, SEED, FLOOR, FLOOR_GET),
)  # fmt: skip
# About 3 minutes (CI): three short hit rounds (the fewest that say anything of the
# slowest round), steady state for ours only, scaling at 10,000 pairs only.
QUICK = Plan(
    mode="quick", rounds=3, sequential_seconds=1, load_seconds=3,
    steady_rounds=1, steady_seconds=10, steady_targets=(OURS,),
    scale_points=(10_000,), scale_repeats=1, scale_rounds=2,
    targets=(OURS, FLASK_CACHING, SEED, FLOOR),
)  # fmt: skip
PACKAGES = (
    "flask", "werkzeug", "gunicorn", "gevent", "redis", "hiredis", "orjson", "celery", "kombu",
    "numpy", "fastapi", "starlette", "uvicorn", "uvloop", "httptools", "flask-caching", "psutil",
)  # fmt: skip
GOALS = """\
## Goals

What issues 10 and 14 asked of ours, to read against the tables below (ratios are the
medians of per-round ratios; a single run on a shared machine is noisy):

- **Hits at the floor.** Hit throughput at least 2.5x Flask-Caching's, 3.5x the
  seed-style API's and at least the constant-JSON floor's (1.0x); sequential hit p50 no
  higher than the floor's. No connection pile-up: every hit round of ours at least 0.8x
  its median round.
- **Steady state.** Under load, with every prediction expiring, p99 at most 3x p50,
  and no request waits for the model.
- **Refresh.** A full refresh with a model that takes no time within 1 s for 1,000 pairs
  and 5 s for 10,000.
- **Many pairs as fast as few.** With 10,000 pairs asked at random, hit throughput at
  least 0.9x that of an API of 4 pairs, and hit p50 at most 1.1x; each API worker
  process at most 80 MiB resident, each Celery pool process at most 150 MiB.
"""
NOTES = """\
## How it is measured

- **Targets.** *ours*: `gunicorn api.wsgi:app` with its `gunicorn.conf.py` as shipped,
  access log and metrics on, Celery worker and beat, default settings, every pair cached
  by beat before any request. *Flask-Caching*: `@cache.memoize` on Redis. *seed-style*:
  FastAPI under uvicorn, a Redis hash per pair, computed on a miss with no lock.
  *floors*: a Flask view answering a constant prediction body, and the same view doing
  one Redis GET (all in `scripts/bench/baselines.py`). The Flask baselines run gthread
  workers (2 x 8 threads, checked in gunicorn's start-up log), as in every earlier
  report. A baseline's model run sleeps the same model latency as ours; every target
  uses its own database of one Redis server.
- **Hits.** Baselines get a 3,600 s expiry here, so that only hits are measured.
  Sequential latency is `wrk -t1 -c1`; load is `wrk -t2 -c32`, new connections each
  round, requests going round every pair (`scripts/bench/spread.lua`). The connections
  each worker process holds are read mid-run from the kernel's socket table.
- **Stampede.** One pair made cold (for ours with `scripts/forget.py`, which also drops
  every API process's near copy), then 50 requests for it at once on 50 open
  connections; model runs counted from each server's `computed prediction pair=` lines.
- **Steady state.** Every target with the seed's 5 s expiry (ours refreshing every third
  of it); "waited for the model" counts answers with `X-Cache: MISS`.
- **Scaling.** Our worker and API with N pairs, no beat, model latency 0: the driver
  sends `predictions.refresh_all` and times it until the newest `computed_at` in Redis
  (the first refresh, which loads the model in each pool process, is not timed). Then
  each API worker process serves every pair once (pipelined) before the
  N-pair API is measured alternately with a 4-pair API on the same cache: latency one
  request at a time (pairs in turn), throughput with `wrk -t2 -c32` (pairs at random).
  RSS is read last, after a load run across every pair in turn.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="about 3 minutes (CI)")
    parser.add_argument("--output", type=Path, help="the Markdown report")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    output: Path = (
        args.output or ROOT / ("docs" if plan is FULL else ".run/bench") / "performance.md"
    )
    try:
        wrk.find_wrk()
    except wrk.WrkError as exc:
        print(f"BROKEN: {exc}", file=sys.stderr)
        return 2
    started_at = time.monotonic()
    run_id = new_run_id()
    os.environ[MARKER] = run_id  # inherited by every process of the run, Redis's too
    work_dir = ROOT / ".run" / "bench" / f"{plan.mode}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    work_dir.mkdir(parents=True, exist_ok=True)
    print(f"benchmark ({plan.mode}): logs in {work_dir.relative_to(ROOT)}", flush=True)
    bench = Bench(plan, RedisServer(work_dir / "redis-data", work_dir), work_dir, run_id)
    tables: list[Table] = []
    broken = None
    try:
        bench.redis_server.start()
        facts = environment(plan)
        if os.getloadavg()[0] > 0.5:  # the ratios share the noise; the absolute figures do not
            print(f"warning: the machine is busy (load {facts['load average at start']})")
        for phase in (hit_phase, steady_phase, scaling_phase):
            tables += phase(bench)
    except (StartFailed, Broken, wrk.WrkError, TimeoutError, OSError) as exc:
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
    print("\n\n".join(f"--- {table.title}\n{table.markdown()}" for table in tables))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(markdown(plan, tables, facts, seconds))
    print(f"wrote {output} in {seconds:.0f} s")
    return 0


def markdown(plan: Plan, tables: list[Table], facts: dict[str, str], seconds: float) -> str:
    out = [
        "# Performance\n",
        f"Written by `make bench` ({plan.mode} mode, {seconds:.0f} s). Every process ran on "
        "this machine, on 127.0.0.1, started on a free port and stopped by PID; the load "
        "generator (wrk) shared the machine with the servers.\n",
        GOALS,
    ]
    for table in tables:
        out += [f"## {table.title[0].upper()}{table.title[1:]}\n", table.markdown() + "\n"]
    out += [NOTES, "## Settings, machine and versions\n"]
    out.append(Table("", ["", ""], [[k, v] for k, v in facts.items()]).markdown())
    return "\n".join(out) + "\n"


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


def load_average() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def environment(plan: Plan) -> dict[str, str]:
    """The plan, the settings ours ran with, the machine and the versions."""
    settings = Settings()  # ours runs with every default (targets.base_env)
    cpus = [line for line in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in line]
    found = {
        "plan": ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(plan).items()),
        "ours": f"gunicorn.conf.py as shipped, {settings.api_workers} workers",
        "Flask baselines": " ".join(f"{k} {v}" for k, v in BASELINE_GUNICORN.items()),
        "seed-style FastAPI": "uvicorn, 1 process, uvloop + httptools, no access log",
        "CPU": f"{cpus[0].split(':', 1)[1].strip() if cpus else 'unknown'}, {os.cpu_count()} cores",
        "kernel": platform.release(),
        "load average at start": load_average(),
        "Python": platform.python_version(),
    }
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    for argv in ([find_redis_server(), "--version"], [wrk.find_wrk(), "--version"]):
        # wrk --version exits 1 after printing its version: read the output regardless.
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        found[Path(argv[0]).name] = (done.stdout or done.stderr).strip().splitlines()[0]
    return found


if __name__ == "__main__":
    sys.exit(main())
