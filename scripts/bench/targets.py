"""The servers under test: started on free ports against one Redis, stopped by PID.

Every target reads the same environment (pairs, model latency, expiry) and lives in its
own Redis database of the same server, so that making one cold never touches another.
Gunicorn targets are started from the repository root, so that each reads our own
./gunicorn.conf.py. Ours runs it exactly as shipped (gevent workers); the Flask baselines
override its worker model with BASELINE_GUNICORN (gthread, 2 workers x 8 threads, the
settings every earlier report in docs/performance.md measured them under), so that their
figures, and our ratios to them, stay comparable from one report to the next.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import redis
from predictions.keys import prediction_key
from predictions.store import PredictionStore

from predictions.model import LogLinearTrendModel
from predictions.settings import Settings
from scripts.bench.results import FLASK_CACHING, FLOOR, FLOOR_GET, OURS, SEED, TITLES
from tests.harness.ports import free_port
from tests.harness.processes import BIN, MARKER, Process, RedisServer, wait_for

START_TIMEOUT_SECONDS = 60
WARM_PASSES = 10
MODEL_RUN_LINE = "computed prediction pair="

_DATABASES = {OURS: 0, SEED: 2, FLASK_CACHING: 3, FLOOR_GET: 4, FLOOR: 5}  # 1: our broker
_GUNICORN_APPS = {
    OURS: "api.wsgi:app",
    FLASK_CACHING: "scripts.bench.flask_caching_app:create_app()",
    FLOOR: "scripts.bench.floors:create_constant_app()",
    FLOOR_GET: "scripts.bench.floors:create_redis_get_app()",
}

# Ours runs the default model: its predictions are stored under its version.
OURS_VERSION = LogLinearTrendModel.version
# The Flask baselines' worker model, forced on the command line (which overrides
# ./gunicorn.conf.py): gthread, 8 threads per worker, 5 s keep-alive, at most 1,000
# connections per worker (gunicorn's default), as gunicorn.conf.py said until ours moved
# to gevent. Workers (2), timeouts and request limits still come from the file.
BASELINE_GUNICORN: dict[str, str | int] = {
    "worker_class": "gthread",
    "threads": 8,
    "keepalive": 5,
    "worker_connections": 1000,
}
_GUNICORN_FLAGS = {
    "worker_class": "--worker-class",
    "threads": "--threads",
    "keepalive": "--keep-alive",
    "worker_connections": "--worker-connections",
}
# What gunicorn logs at start-up for the worker model it runs: checked for every target.
WORKER_LINE = "Using worker: "
# Ours' variables (every Settings field, as Settings.from_env spells it) and the
# prefixes of the rest: none of the driver's own may leak into a target.
_OUR_VARIABLES = frozenset(field.name.upper() for field in dataclasses.fields(Settings))
_OUR_PREFIXES = ("CELERY", "REDIS", "API_", "PAIRS", "PREDICTION_", "REFRESH_", "SIMULATED_")


def _message(line: str) -> str:
    """A log line's message: gunicorn's lines are JSON objects under LOG_FORMAT=json."""
    if line.startswith("{"):
        try:
            return str(orjson.loads(line).get("message", ""))
        except orjson.JSONDecodeError:
            return line
    return line


def base_env(run_id: str, **overrides: str) -> dict[str, str]:
    """The driver's environment without any setting of ours, plus the run's marker.

    So ours runs as shipped: a LOG_LEVEL=WARNING in the driver's shell, say, would
    silently turn its access log off.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_OUR_PREFIXES) and k not in _OUR_VARIABLES
    }
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
            MARKER: run_id,
        }
    )
    env.update(overrides)
    return env


def gunicorn_argv(name: str) -> list[str]:
    """The gunicorn command line of a gunicorn target (baselines: BASELINE_GUNICORN)."""
    argv = [str(BIN / "gunicorn"), _GUNICORN_APPS[name]]
    if name != OURS:
        for setting, value in BASELINE_GUNICORN.items():
            argv += [_GUNICORN_FLAGS[setting], str(value)]
    return argv


def expected_worker(name: str) -> str | None:
    """The worker class gunicorn must report for a target (None: as gunicorn.conf.py says)."""
    return None if name == OURS else str(BASELINE_GUNICORN["worker_class"])


def http_get(port: int, path: str, timeout: float = 15) -> tuple[int, str | None]:
    """One GET on a new connection: (status, X-Cache header)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("X-Cache")
    finally:
        connection.close()


class Target:
    """One server under test (with, for ours, its Celery worker and beat)."""

    def __init__(
        self,
        name: str,
        redis_server: RedisServer,
        log_dir: Path,
        pairs: Sequence[str],
        run_id: str,
        settings: Mapping[str, str],
    ) -> None:
        self.name = name
        self.title = TITLES[name]
        self.redis_server = redis_server
        self.log_dir = log_dir
        self.pairs = list(pairs)
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
        self.worker_class: str | None = None  # gunicorn's, as it logged it at start-up

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
        """Start every process (logs named ``<target>-<label>``) and wait for HTTP.

        Ours gets its Celery worker and beat, unless told otherwise (the driver then sends
        the refreshes itself, or another target's worker fills the same cache).
        """
        log_name = f"{self.name}-{label}"
        if self.name == OURS and worker:
            celery = [str(BIN / "celery"), "-A", "worker"]
            self.worker = self._spawn(f"{log_name}-worker", [*celery, "worker", "--loglevel=INFO"])
            if beat:
                self._spawn(f"{log_name}-beat", [*celery, "beat", "--loglevel=INFO"])
        if self.name == SEED:
            argv = [
                str(BIN / "uvicorn"), "--factory", "scripts.bench.seed_app:create_app",
                "--host", "127.0.0.1", "--port", str(self.port),
                # The seed logged every request; that would measure log writing, not caching.
                "--no-access-log",
            ]  # fmt: skip
        else:
            argv = gunicorn_argv(self.name)
        self._spawn(log_name, argv)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self._answers():
            if time.monotonic() > deadline:
                raise StartFailed(
                    f"{self.title} not answering on {self.url} within "
                    f"{START_TIMEOUT_SECONDS} s; see {self.log_dir}"
                )
            time.sleep(0.1)
        if self.name != SEED:
            self.worker_class = self._worker_class()
        return self

    def _worker_class(self) -> str:
        """The worker class gunicorn says it runs; StartFailed if not the one intended."""
        lines = [
            _message(line).split(WORKER_LINE, 1)[1].strip()
            for line in self.server.output().splitlines()
            if WORKER_LINE in line
        ]
        found = lines[-1] if lines else "not logged"
        wanted = expected_worker(self.name)
        if wanted is not None and not found.endswith(wanted):
            raise StartFailed(f"{self.title} runs worker {found!r}, not {wanted!r}")
        return found

    def _spawn(self, name: str, argv: list[str]) -> Process:
        process = Process(name, argv, self.env, self.log_dir).start()
        self.processes.append(process)
        return process

    def _answers(self) -> bool:
        # Checked here rather than through wait_for(), which would retry past the failure.
        for process in self.processes:
            if not process.running():
                raise StartFailed(f"{process.name} exited; see {process.log_path}")
        try:
            http_get(self.port, "/", timeout=2)  # any status: the server is up
        except OSError:
            return False
        return True

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes = []
        self.worker = None

    def running(self) -> bool:
        return bool(self.processes) and all(p.running() for p in self.processes)

    def model_runs(self) -> int:
        """Model runs in the HTTP server's processes so far (for ours: misses only)."""
        return self.server.count(MODEL_RUN_LINE)

    def warm(self, timeout: float = 60) -> None:
        """Make every pair a hit: ours through beat and the worker, baselines by asking."""
        if self.name == OURS:
            keys = [prediction_key(pair, OURS_VERSION) for pair in self.pairs]
            wait_for(
                lambda: self.redis.exists(*keys) == len(keys),
                timeout,
                0.1,
                f"{self.title}: every pair cached by beat and the worker",
            )
        # Until one pass is all hits: a first call can compute twice in two processes
        # (Flask-Caching's version key races), leaving a pair cold after one pass.
        with ThreadPoolExecutor(max_workers=min(len(self.pairs), 16)) as pool:
            for _ in range(WARM_PASSES):
                answers = list(
                    pool.map(lambda pair: http_get(self.port, f"/predict/{pair}"), self.pairs)
                )
                bad = [status for status, _ in answers if status != 200]
                if bad:
                    raise StartFailed(f"{self.title}: warm-up answered {bad[:5]}")
                if all(cache != "MISS" for _, cache in answers):
                    return
        raise StartFailed(f"{self.title}: still missing after {WARM_PASSES} warm-up passes")

    def make_cold(self, pair: str) -> None:
        """Remove ``pair``'s cached prediction, as if it had just expired.

        Ours through the store's forget(), which also tells every API process that
        follows the write feed to drop its near copy: a bare DEL would leave those
        copies served as hits until they expire, and the stampede would measure hits.
        """
        if self.name == OURS:
            PredictionStore(self.redis).forget(pair, OURS_VERSION)
        else:
            self.redis.flushdb()  # a baseline's database holds nothing but its cache


class StartFailed(RuntimeError):
    """A target did not start or did not answer as it should: the benchmark is broken."""
