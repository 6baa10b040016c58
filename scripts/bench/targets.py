"""The servers under test: started on free ports, each with its own database of one
Redis server (making one cold never touches another), and stopped by PID."""

from __future__ import annotations

import contextlib
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
import urllib3

from predictions.settings import Settings
from tests.harness.http import Answer, computations, get
from tests.harness.ports import free_port
from tests.harness.processes import BIN, MARKER, ROOT, Process, RedisServer, wait_for
from tests.harness.store import cached
from tests.harness.system import TEST_VERSION

OURS, FLASK_CACHING, SEED, FLOOR, FLOOR_GET = "ours", "flask-caching", "seed", "floor", "floor-get"
COMPUTING = (OURS, FLASK_CACHING, SEED)  # the targets that run the model on a miss
ALL = (*COMPUTING, FLOOR, FLOOR_GET)
# Each target's title, Redis database (1 is our broker's) and the app gunicorn serves.
_TARGETS = {
    OURS: ("ours (gunicorn api.wsgi:app)", 0, "api.wsgi:app"),
    FLASK_CACHING: ("Flask-Caching memoize", 3, "scripts.bench.baselines:flask_caching_app()"),
    SEED: ("seed-style FastAPI", 2, ""),  # served by uvicorn
    FLOOR: ("floor: constant JSON", 5, "scripts.bench.baselines:constant_app()"),
    FLOOR_GET: ("floor: one Redis GET", 4, "scripts.bench.baselines:redis_get_app()"),
}
OURS_VERSION = TEST_VERSION  # the default model's, in its predictions' keys
START_TIMEOUT_SECONDS = 60
WARM_PASSES = 10
# The Flask baselines' worker model, over ./gunicorn.conf.py (workers, timeouts, limits),
# fixed so that their ratios stay comparable from run to run; ours runs the file as is.
BASELINE_GUNICORN = {
    "--worker-class": "gthread", "--threads": "8", "--keep-alive": "5",
    "--worker-connections": "1000",
}  # fmt: skip
_WORKER_LINE = re.compile(r"Using worker: ([\w.]+)")
# A refresh counter's sample in Prometheus's text format: name{labels} value.
_SAMPLE = re.compile(r"^(prediction_refresh\w*(?:\{[^}]*\})?) ([0-9.e+-]+)$", re.MULTILINE)
# None of the driver's own settings may leak into a target (a LOG_LEVEL=WARNING would
# turn its access log off): every Settings field, and these prefixes.
_OUR_VARIABLES = frozenset(field.name.upper() for field in dataclasses.fields(Settings))
_OUR_PREFIXES = ("CELERY", "REDIS", "API_", "PAIRS", "PREDICTION_", "REFRESH_", "SIMULATED_")


class Broken(RuntimeError):
    """The benchmark itself is broken: a target that does not start or answer as it
    should, or figures that measure errors, not serving."""


def base_env(run_id: str, **overrides: str) -> dict[str, str]:
    """The driver's environment without any setting of ours, plus the run's marker."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OUR_PREFIXES)}
    env = {k: v for k, v in env.items() if k not in _OUR_VARIABLES}
    path = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return {**env, "PATH": path, "PYTHONUNBUFFERED": "1", MARKER: run_id, **overrides}


def gunicorn_argv(name: str) -> list[str]:
    """Ours: gunicorn.conf.py alone decides; baselines: BASELINE_GUNICORN on top."""
    flags = [] if name == OURS else [part for item in BASELINE_GUNICORN.items() for part in item]
    return [str(BIN / "gunicorn"), _TARGETS[name][2], *flags]


class Target:
    """One server under test (with, for ours, its Celery worker and beat)."""

    def __init__(
        self, name: str, redis_server: RedisServer, log_dir: Path, pairs: Sequence[str],
        run_id: str, settings: Mapping[str, str], database: int | None = None,
        registry: bool = False,
    ) -> None:  # fmt: skip
        """``database`` overrides the target's own; ``registry``: its pairs go into the
        pair registry (load_registry) rather than PAIRS, which holds 16,000 at most."""
        self.title, own_database, _ = _TARGETS[name]
        database = own_database if database is None else database
        self.name, self.log_dir, self.pairs, self.port = name, log_dir, list(pairs), free_port()
        self.redis = redis_server.client(database)
        # Ours serves the worker's metrics on a port of its own: 9808 may be taken.
        self.metrics_port = free_port() if name == OURS else 0
        known = {} if registry else {"PAIRS": ",".join(self.pairs)}
        self.env = base_env(
            run_id, REDIS_URL=f"redis://127.0.0.1:{redis_server.port}/{database}",
            API_BIND=f"127.0.0.1:{self.port}", **known,
            **({"WORKER_METRICS_BIND": f"127.0.0.1:{self.metrics_port}"} if name == OURS else {}),
            **settings,
        )  # fmt: skip
        self.processes: list[Process] = []
        self.worker: Process | None = None  # ours: the Celery worker's main process
        self.worker_class = ""  # gunicorn's, as it logged it at start-up
        # Its own connections, closed after use: idle ones would count as a worker's.
        self.http = urllib3.PoolManager(maxsize=16, retries=False, timeout=15)
        self.url = f"http://127.0.0.1:{self.port}"

    @property
    def server(self) -> Process:
        """The HTTP server's main process: gunicorn's master, or uvicorn."""
        return self.processes[-1]

    def cpu_seconds(self) -> list[float]:
        """CPU time (user and system) each API worker process has used so far."""
        used = []
        for process in worker_processes(self.server.pid):
            with contextlib.suppress(psutil.NoSuchProcess):
                times = process.cpu_times()
                used.append(times.user + times.system)
        return used

    def start(self, label: str, beat: bool = True, worker: bool = True, api: bool = True) -> Target:
        """Start every process (logs named <target>-<label>) and wait for HTTP (or, with
        no API, for the worker to be ready)."""
        name = f"{self.name}-{label}"
        if self.name == OURS and worker:
            celery = [str(BIN / "celery"), "-A", "worker"]
            self.worker = self._spawn(f"{name}-worker", [*celery, "worker", "--loglevel=INFO"])
            if beat:
                self._spawn(f"{name}-beat", [*celery, "beat", "--loglevel=INFO"])
        if not api:
            worker_ready = lambda: self.worker is not None and " ready." in self.worker.output()  # noqa: E731
            wait_for(worker_ready, START_TIMEOUT_SECONDS, 0.1, f"{name}-worker ready")
            return self
        # The seed-style API logs no request: that would measure log writing, not caching.
        seed = [str(BIN / "uvicorn"), "--factory", "scripts.bench.baselines:seed_app",
                "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log"]  # fmt: skip
        self._spawn(name, seed if self.name == SEED else gunicorn_argv(self.name))
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._answers():
            if time.monotonic() > deadline:
                raise Broken(f"{self.title} not answering on {self.url}; see {self.log_dir}")
            time.sleep(0.1)
        if self.name != SEED:
            self.worker_class = (_WORKER_LINE.findall(self.server.output()) or ["not logged"])[-1]
            wanted = BASELINE_GUNICORN["--worker-class"]
            if self.name != OURS and not self.worker_class.endswith(wanted):
                raise Broken(f"{self.title} runs worker {self.worker_class!r}, not {wanted}")
        return self

    def _spawn(self, name: str, argv: list[str]) -> Process:
        self.processes.append(Process(name, argv, self.env, self.log_dir).start())
        return self.processes[-1]

    def _answers(self) -> bool:
        for process in self.processes:  # a process that exited will not come back
            if not process.running():
                raise Broken(f"{process.name} exited; see {process.log_path}")
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

    def load_registry(self, pairs_file: Path) -> float:
        """`python -m predictions.pairs load FILE` against this target's Redis, as an
        operator runs it; its wall time in seconds (the interpreter's start included)."""
        argv = [sys.executable, "-m", "predictions.pairs", "load", str(pairs_file)]
        started = time.perf_counter()
        done = subprocess.run(argv, cwd=ROOT, env=self.env, capture_output=True, timeout=120)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise Broken(f"pairs load {pairs_file.name}: {done.stderr.decode()[-300:]}")
        return seconds

    def worker_metrics(self) -> dict[str, float]:
        """The worker's refresh counters from its metrics port, by sample name (and
        result label): what an operator's Prometheus would scrape."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        try:
            text = self.http.request("GET", url, timeout=5).data.decode()
        except urllib3.exceptions.HTTPError as exc:
            raise Broken(f"{self.title}: worker metrics at {url}: {exc}") from None
        finally:
            self.http.clear()
        return refresh_samples(text)

    def model_runs(self, pair: str | None = None) -> int:
        """Model runs in the HTTP server's processes so far (for ours: misses only)."""
        if pair:
            return computations(self.server, pair)
        return self.server.count("computed prediction pair=")

    def warm(self, timeout: float = 60) -> None:
        """Make every pair a hit: ours through beat and the worker, baselines by asking."""
        if self.name == OURS:
            what = f"{self.title}: every pair cached by beat and the worker"
            wait_for(lambda: cached(self.redis, self.pairs, OURS_VERSION), timeout, 0.1, what)
        # Until a pass is all hits: a first call can compute twice in two processes
        # (Flask-Caching's version key races), leaving a pair cold after one pass.
        with ThreadPoolExecutor(max_workers=min(len(self.pairs), 16)) as pool, self.http:
            for _ in range(WARM_PASSES):
                answers = list(pool.map(self._get, self.pairs))
                if bad := [a.status for a in answers if a.status != 200]:
                    raise Broken(f"{self.title}: warm-up answered {bad[:5]}")
                if all(a.headers.get("X-Cache") != "MISS" for a in answers):
                    return
        raise Broken(f"{self.title}: still missing after {WARM_PASSES} warm-up passes")

    def _get(self, pair: str) -> Answer:
        return get(self.server, f"/predict/{pair}", http=self.http)

    def make_cold(self, pair: str) -> None:
        """Remove the pair's prediction as if it had expired: ours with `make forget`, which
        also drops every API process's near copy (a bare DEL would leave those as hits)."""
        if self.name != OURS:
            self.redis.flushdb()  # a baseline's database holds nothing but its cache
            return
        forget = [sys.executable, "-m", "scripts.forget", pair]
        done = subprocess.run(forget, cwd=ROOT, env=self.env, capture_output=True, timeout=30)
        if done.returncode != 0:
            raise Broken(f"scripts.forget {pair}: {done.stderr.decode()[-300:]}")

    def connections(self) -> dict[int, list[Any]]:
        """Each API worker process's TCP connections to our port, by PID."""
        found = {}
        for process in worker_processes(self.server.pid):
            with contextlib.suppress(psutil.NoSuchProcess):
                tcp = process.net_connections(kind="tcp")
                found[process.pid] = [c for c in tcp if c.laddr and c.laddr.port == self.port]
        return found

    def split(self) -> str:
        """Established connections per worker process, busiest first (one may hold all)."""
        held = [
            sum(c.status == psutil.CONN_ESTABLISHED for c in cs)
            for cs in self.connections().values()
        ]
        return "/".join(map(str, sorted(held, reverse=True)))


def refresh_samples(text: str) -> dict[str, float]:
    """The refresh metrics' samples in a Prometheus text exposition, by name and labels."""
    return {name: float(value) for name, value in _SAMPLE.findall(text)}


def worker_processes(main_pid: int) -> list[psutil.Process]:
    """gunicorn's workers or Celery's pool; a server without children does the work."""
    main = psutil.Process(main_pid)
    return main.children() or [main]


def rss_mib(main_pid: int) -> dict[int, float]:
    """Resident memory of each worker process, in MiB, by PID."""
    sizes = {}
    for process in worker_processes(main_pid):
        with contextlib.suppress(psutil.NoSuchProcess):
            sizes[process.pid] = process.memory_info().rss / 2**20
    return sizes
