"""The servers under test: started on free ports against one Redis, stopped by PID.

Every target reads the same environment (pairs, model latency, expiry) and keeps its
cache in its own Redis database of the same server, so that making one cold never
touches another. Gunicorn targets start from the repository root and read our own
./gunicorn.conf.py. Ours runs it as shipped (gevent workers); the Flask baselines
override its worker model with BASELINE_GUNICORN (gthread, 2 workers x 8 threads), the
settings every earlier report measured them under, so that the ratios stay comparable.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import redis
import urllib3

from predictions.settings import Settings
from tests.harness.http import Answer, computations, get
from tests.harness.ports import free_port
from tests.harness.processes import BIN, MARKER, ROOT, Process, RedisServer, wait_for
from tests.harness.store import cached
from tests.harness.system import TEST_VERSION

OURS, FLASK_CACHING, SEED, FLOOR, FLOOR_GET = "ours", "flask-caching", "seed", "floor", "floor-get"
TITLES = {
    OURS: "ours (gunicorn api.wsgi:app)",
    FLASK_CACHING: "Flask-Caching memoize",
    SEED: "seed-style FastAPI",
    FLOOR: "floor: constant JSON",
    FLOOR_GET: "floor: one Redis GET",
}
# Ours runs the default model, whose version names its predictions' keys.
OURS_VERSION = TEST_VERSION
START_TIMEOUT_SECONDS = 60
WARM_PASSES = 10
MODEL_RUN_LINE = "computed prediction pair="
_DATABASES = {OURS: 0, SEED: 2, FLASK_CACHING: 3, FLOOR_GET: 4, FLOOR: 5}  # 1: our broker
_APPS = {
    OURS: "api.wsgi:app",
    FLASK_CACHING: "scripts.bench.baselines:flask_caching_app()",
    FLOOR: "scripts.bench.baselines:constant_app()",
    FLOOR_GET: "scripts.bench.baselines:redis_get_app()",
}
# On the command line, which overrides ./gunicorn.conf.py: gthread, 8 threads, 5 s
# keep-alive and gunicorn's default 1,000 connections per worker, as gunicorn.conf.py
# said until ours moved to gevent. Workers, timeouts and limits still come from the file.
BASELINE_GUNICORN = {
    "--worker-class": "gthread", "--threads": "8", "--keep-alive": "5",
    "--worker-connections": "1000",
}  # fmt: skip
_WORKER_LINE = re.compile(r"Using worker: ([\w.]+)")
# Ours' variables (every Settings field) and the prefixes of the rest: none of the
# driver's own may leak into a target (a LOG_LEVEL=WARNING would turn its access log off).
_OUR_VARIABLES = frozenset(field.name.upper() for field in dataclasses.fields(Settings))
_OUR_PREFIXES = ("CELERY", "REDIS", "API_", "PAIRS", "PREDICTION_", "REFRESH_", "SIMULATED_")


class StartFailed(RuntimeError):
    """A target did not start or did not answer as it should: the benchmark is broken."""


def base_env(run_id: str, **overrides: str) -> dict[str, str]:
    """The driver's environment without any setting of ours, plus the run's marker."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_OUR_PREFIXES) and k not in _OUR_VARIABLES
    }
    path = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return {**env, "PATH": path, "PYTHONUNBUFFERED": "1", MARKER: run_id, **overrides}


def gunicorn_argv(name: str) -> list[str]:
    """Ours: gunicorn.conf.py alone decides; baselines: BASELINE_GUNICORN on top."""
    flags = [] if name == OURS else [part for item in BASELINE_GUNICORN.items() for part in item]
    return [str(BIN / "gunicorn"), _APPS[name], *flags]


class Target:
    """One server under test (with, for ours, its Celery worker and beat)."""

    def __init__(
        self, name: str, redis_server: RedisServer, log_dir: Path, pairs: Sequence[str],
        run_id: str, settings: Mapping[str, str],
    ) -> None:  # fmt: skip
        self.name, self.title = name, TITLES[name]
        self.redis_server, self.log_dir, self.pairs = redis_server, log_dir, list(pairs)
        self.port = free_port()
        self.database = _DATABASES[name]
        self.env = base_env(
            run_id,
            REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/{self.database}",
            API_BIND=f"127.0.0.1:{self.port}",
            PAIRS=",".join(self.pairs),
            **settings,
        )
        self.processes: list[Process] = []
        self.worker: Process | None = None  # ours: the Celery worker's main process
        self.worker_class = ""  # gunicorn's, as it logged it at start-up
        # Its own connections, closed after use: idle ones would count in the split.
        self.http = urllib3.PoolManager(maxsize=16, retries=False, timeout=15)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def server(self) -> Process:
        """The HTTP server's main process: gunicorn's master, or uvicorn."""
        return self.processes[-1]

    @property
    def redis(self) -> redis.Redis:
        return self.redis_server.client(self.database)

    def start(self, label: str, beat: bool = True, worker: bool = True) -> Target:
        """Start every process (logs named <target>-<label>) and wait for HTTP."""
        name = f"{self.name}-{label}"
        if self.name == OURS and worker:
            celery = [str(BIN / "celery"), "-A", "worker"]
            self.worker = self._spawn(f"{name}-worker", [*celery, "worker", "--loglevel=INFO"])
            if beat:
                self._spawn(f"{name}-beat", [*celery, "beat", "--loglevel=INFO"])
        if self.name == SEED:
            # The seed logged every request: that would measure log writing, not caching.
            argv = [str(BIN / "uvicorn"), "--factory", "scripts.bench.baselines:seed_app",
                    "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log"]  # fmt: skip
        else:
            argv = gunicorn_argv(self.name)
        self._spawn(name, argv)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._answers():
            if time.monotonic() > deadline:
                raise StartFailed(f"{self.title} not answering on {self.url}; see {self.log_dir}")
            time.sleep(0.1)
        if self.name != SEED:
            found = _WORKER_LINE.findall(self.server.output())
            self.worker_class = found[-1] if found else "not logged"
            wanted = BASELINE_GUNICORN["--worker-class"]
            if self.name != OURS and not self.worker_class.endswith(wanted):
                raise StartFailed(f"{self.title} runs worker {self.worker_class!r}, not {wanted}")
        return self

    def _spawn(self, name: str, argv: list[str]) -> Process:
        process = Process(name, argv, self.env, self.log_dir).start()
        self.processes.append(process)
        return process

    def _answers(self) -> bool:
        for process in self.processes:  # a process that exited will not come back
            if not process.running():
                raise StartFailed(f"{process.name} exited; see {process.log_path}")
        try:
            self.http.request("GET", f"{self.url}/", timeout=2)  # any status: the server is up
        except urllib3.exceptions.HTTPError:
            return False
        finally:
            self.http.clear()
        return True

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes, self.worker = [], None

    def model_runs(self, pair: str | None = None) -> int:
        """Model runs in the HTTP server's processes so far (for ours: misses only)."""
        if pair is not None:
            return computations(self.server, pair)
        return self.server.count(MODEL_RUN_LINE)

    def warm(self, timeout: float = 60) -> None:
        """Make every pair a hit: ours through beat and the worker, baselines by asking."""
        if self.name == OURS:
            wait_for(
                lambda: cached(self.redis, self.pairs, OURS_VERSION), timeout, 0.1,
                f"{self.title}: every pair cached by beat and the worker",
            )  # fmt: skip
        # Until a pass is all hits: a first call can compute twice in two processes
        # (Flask-Caching's version key races), leaving a pair cold after one pass.
        with ThreadPoolExecutor(max_workers=min(len(self.pairs), 16)) as pool, self.http:
            for _ in range(WARM_PASSES):
                answers = list(pool.map(self._get, self.pairs))
                if bad := [a.status for a in answers if a.status != 200]:
                    raise StartFailed(f"{self.title}: warm-up answered {bad[:5]}")
                if all(a.headers.get("X-Cache") != "MISS" for a in answers):
                    return
        raise StartFailed(f"{self.title}: still missing after {WARM_PASSES} warm-up passes")

    def _get(self, pair: str) -> Answer:
        return get(self.server, f"/predict/{pair}", http=self.http)

    def make_cold(self, pair: str) -> None:
        """Remove the pair's cached prediction, as if it had just expired.

        Ours as an operator would (`make forget`), which also tells every API process
        to drop its near copy: a bare DEL would leave those copies served as hits.
        """
        if self.name != OURS:
            self.redis.flushdb()  # a baseline's database holds nothing but its cache
            return
        forget = [sys.executable, "-m", "scripts.forget", pair]
        done = subprocess.run(forget, cwd=ROOT, env=self.env, capture_output=True, timeout=30)
        if done.returncode != 0:
            raise StartFailed(f"scripts.forget {pair}: {done.stderr.decode()[-300:]}")


def worker_processes(main_pid: int) -> list[psutil.Process]:
    """gunicorn's workers or Celery's pool; a server without children does the work."""
    main = psutil.Process(main_pid)
    return main.children() or [main]


def _connections(process: psutil.Process, port: int) -> list[Any]:
    """The process's TCP connections on local ``port``."""
    try:
        return [c for c in process.net_connections(kind="tcp") if c.laddr and c.laddr.port == port]
    except psutil.NoSuchProcess:
        return []


def connection_split(main_pid: int, port: int) -> list[int]:
    """Established client connections held by each worker process, busiest first.

    One worker may accept every keep-alive connection while the other idles: this shows it.
    """
    return sorted(
        (
            sum(c.status == psutil.CONN_ESTABLISHED for c in _connections(p, port))
            for p in worker_processes(main_pid)
        ),
        reverse=True,
    )


def worker_holding(main_pid: int, port: int, client_port: int) -> int | None:
    """The worker process that holds the connection from ``client_port`` (None: none)."""
    for process in worker_processes(main_pid):
        for c in _connections(process, port):
            if c.raddr and c.raddr.port == client_port:
                return int(process.pid)
    return None


def rss_mib(main_pid: int) -> list[float]:
    """Resident memory of each worker process, in MiB."""
    sizes = []
    for process in worker_processes(main_pid):
        try:
            sizes.append(process.memory_info().rss / 2**20)
        except psutil.NoSuchProcess:
            continue
    return sizes
