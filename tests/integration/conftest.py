"""Fixtures that start the real system: redis-server, celery worker and beat, gunicorn.

The settings they run with are tests/harness/system.py's; the processes are
tests/harness/processes.py's.

Processes are started with the README's commands from the repository root, in the
project's virtualenv, and stopped by PID after each test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.http import HTTP
from tests.harness.ports import free_port
from tests.harness.processes import (
    BIN,
    MARKER,
    Process,
    ProcessFactory,
    RedisServer,
    new_run_id,
    wait_for,
)
from tests.harness.system import TEST_GRACE, TEST_MODEL_LATENCY, TEST_PAIRS, TEST_REFRESH, TEST_TTL

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    base = tmp_path_factory.mktemp("redis")
    server = RedisServer(base / "data", base).start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _flush(redis_server: RedisServer) -> Iterator[None]:
    if not (redis_server.process and redis_server.process.running()):
        redis_server.start()  # a test killed it and failed before restarting it
    redis_server.client().flushall()
    yield


@pytest.fixture
def service_env(redis_server: RedisServer) -> dict[str, str]:
    """The environment every process of one test shares."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY", "REDIS", "API_"))}
    # Importing `worker` (test modules do, at collection) sets this in the test process;
    # inherited, every server of the run would share one metrics directory, and a
    # "mostrecent" gauge of one (beat's clock offset) would win over another's.
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "REDIS_URL": redis_server.url,
            "PAIRS": TEST_PAIRS,
            "PREDICTION_TTL_SECONDS": str(TEST_TTL),
            "REFRESH_INTERVAL_SECONDS": str(TEST_REFRESH),
            "SIMULATED_MODEL_LATENCY_SECONDS": str(TEST_MODEL_LATENCY),
            "COMPUTE_TIMEOUT_SECONDS": "5",
            "STALE_GRACE_SECONDS": str(TEST_GRACE),
            "API_BIND": f"127.0.0.1:{free_port()}",
            "API_WORKERS": "2",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            MARKER: new_run_id(),
        }
    )
    return env


@pytest.fixture
def start(tmp_path: Path, service_env: dict[str, str]) -> Iterator[ProcessFactory]:
    """start("api" | "worker" | "beat", **env overrides) -> a running Process."""
    commands = {
        "api": [str(BIN / "gunicorn"), "api.wsgi:app"],
        "worker": [str(BIN / "celery"), "-A", "worker", "worker", "--loglevel=INFO"],
        "beat": [str(BIN / "celery"), "-A", "worker", "beat", "--loglevel=INFO"],
    }
    started: list[Process] = []

    def _start(kind: str, name: str | None = None, **overrides: str) -> Process:
        process = Process(name or kind, commands[kind], {**service_env, **overrides}, tmp_path)
        started.append(process.start())
        if kind == "api":
            url = f"http://{process.env['API_BIND']}/healthz"
            # Through the suite's pool, closed before the processes stop: a connection
            # left open would hold gunicorn's graceful shutdown for its idle timeout.
            wait_for(
                lambda: HTTP.request("GET", url, timeout=1, retries=False).status == 200,
                30,
                what=url,
            )
        return process

    yield _start
    # The suite's keep-alive connections closed first: gunicorn's gevent workers wait
    # for open ones up to their graceful timeout (10 s) before they exit. Then every
    # process is sent SIGTERM at once, so their shutdowns overlap instead of adding up.
    HTTP.clear()
    for process in reversed(started):
        process.terminate()
    for process in reversed(started):
        process.stop()
