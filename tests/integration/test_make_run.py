"""`make run`, as a user runs it: everything starts, serves, and Ctrl-C stops it all."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import orjson
import pytest
import urllib3

from tests.processes import (
    BIN,
    MARKER,
    ROOT,
    RedisServer,
    free_port,
    new_run_id,
    processes_with_marker,
    wait_for,
)

pytestmark = pytest.mark.integration


def _make_run(tmp_path: Path, **env: str) -> tuple[subprocess.Popen[bytes], Path, dict[str, str]]:
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY", "REDIS", "API_"))}
    run_env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{run_env.get('PATH', '')}",
            "API_BIND": f"127.0.0.1:{free_port()}",
            "SIMULATED_MODEL_LATENCY_SECONDS": "0.2",
            MARKER: new_run_id(),
            **env,
        }
    )
    log = tmp_path / "make-run.log"
    with log.open("wb") as out:
        make = subprocess.Popen(
            ["make", "run"], cwd=ROOT, env=run_env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    return make, log, run_env


def _serves_hits(bind: str) -> bool:
    response = urllib3.request("GET", f"http://{bind}/predict/ETH-EUR", timeout=2, retries=False)
    return response.status == 200 and response.headers["X-Cache"] == "HIT"


def _ctrl_c(make: subprocess.Popen[bytes], run_id: str) -> None:
    # A terminal's Ctrl-C signals the whole foreground process group.
    os.killpg(make.pid, signal.SIGINT)
    try:
        # make itself dies of the SIGINT, as it does in a terminal; what matters is
        # that honcho stopped every process it started.
        make.wait(30)
        wait_for(lambda: not processes_with_marker(run_id), 10, what="every process stopped")
    finally:
        for pid in processes_with_marker(run_id):
            os.kill(pid, signal.SIGKILL)


def test_make_run_starts_embedded_redis_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    redis_port = free_port()
    make, log, env = _make_run(tmp_path, EMBEDDED_REDIS_PORT=str(redis_port))
    try:
        wait_for(
            lambda: _serves_hits(env["API_BIND"]), 90, interval=0.2, what="make run serving HITs"
        )
        body = orjson.loads(
            urllib3.request("GET", f"http://{env['API_BIND']}/predict/eth-eur", timeout=2).data
        )
        assert body["pair"] == "ETH-EUR"
        # make, honcho, redis, celery worker and pool, beat, gunicorn and its workers
        assert len(processes_with_marker(env[MARKER])) >= 8
        output = log.read_text()
        for name in ("redis.1", "worker.1", "beat.1", "api.1"):
            assert f"{name} started" in output
        assert f"redis://127.0.0.1:{redis_port}/0" in output
        # Its data lives under the repository, in a folder git ignores.
        assert (ROOT / ".run" / "redis").is_dir()
        ignored = subprocess.run(["git", "check-ignore", "-q", ".run/redis"], cwd=ROOT, timeout=10)
        assert ignored.returncode == 0
    finally:
        _ctrl_c(make, env[MARKER])


def test_make_run_uses_redis_url_when_set(tmp_path: Path, redis_server: RedisServer) -> None:
    make, log, env = _make_run(tmp_path, REDIS_URL=redis_server.url)
    try:
        wait_for(
            lambda: _serves_hits(env["API_BIND"]), 90, interval=0.2, what="make run serving HITs"
        )
        assert redis_server.client().dbsize() > 0  # the predictions landed in our server
        assert "redis.1" not in log.read_text()
    finally:
        _ctrl_c(make, env[MARKER])
