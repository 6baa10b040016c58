"""A Redis password in REDIS_URL never shows: not in any process's output, any metric
label, nor in the /pairs, /readyz or error bodies, whether Redis is up, down or the
URL is malformed."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import urllib3

from scripts.embedded_redis import server_args
from tests.harness.ports import free_port
from tests.harness.processes import BIN, ROOT, Process, ProcessFactory, wait_for

pytestmark = pytest.mark.integration

PASSWORD = "s3cretpw"  # noqa: S105 - a test password, the one to look for


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[tuple[Process, int]]:
    port = free_port()
    argv = server_args(port, tmp_path / "locked", "--save", "", "--requirepass", PASSWORD)
    process = Process("locked-redis", argv, os.environ, tmp_path).start()
    yield process, port
    process.stop()


def _get(url: str) -> urllib3.BaseHTTPResponse:
    return urllib3.request("GET", url, timeout=5, retries=False)


def test_no_password_in_output_metrics_or_bodies(
    start: ProcessFactory, locked_redis: tuple[Process, int], tmp_path: Path
) -> None:
    redis_process, port = locked_redis
    url = f"redis://default:{PASSWORD}@127.0.0.1:{port}/0"
    metrics_bind = f"127.0.0.1:{free_port()}"
    env = {"REDIS_URL": url, "WORKER_METRICS_BIND": metrics_bind, "LOG_LEVEL": "DEBUG"}
    worker = start("worker", **env)
    beat = start("beat", **env)
    api = start("api", **env)
    base = f"http://{api.env['API_BIND']}"
    wait_for(lambda: _get(f"{base}/predict/ETH-EUR").status == 200, 60, what="a prediction")
    bodies = [_get(f"{base}{path}").data for path in ("/pairs", "/readyz", "/metrics")]
    bodies.append(wait_for(lambda: _get(f"http://{metrics_bind}/metrics").data, 30))  # type: ignore[arg-type]
    assert b"ETH-EUR" in bodies[0] and b"ready" in bodies[1]
    # Redis gone: the error bodies and the reconnect attempts in every log.
    redis_process.stop()
    down = [_get(f"{base}{path}") for path in ("/readyz", "/pairs", "/predict/XRP-EUR")]
    assert down[0].status == 503
    bodies += [response.data for response in down]
    wait_for(lambda: "Error" in worker.output() or "rror" in beat.output(), 30, fail=False)
    for body in bodies:
        assert PASSWORD.encode() not in body
    for process in (worker, beat, api):
        output = process.output()
        assert output, process.name
        assert PASSWORD not in output, process.name


_COMMANDS = [
    ["celery", "-A", "worker", "worker"],
    ["celery", "-A", "worker", "beat"],
    ["gunicorn", "api.wsgi:app"],
    ["python", "-m", "scripts.run"],
    ["python", "-m", "predictions.rollout", "--rollback"],
]
# The API and the rollout command never use the broker, so they do not check it (and
# start as usual): only the processes that read a setting stop on it.
_USES_BROKER = ("worker", "beat", "scripts.run")


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        pytest.param(argv, name, id=f"{' '.join(argv[:3])}-{name}")
        for argv in _COMMANDS
        for name in ("REDIS_URL", "CELERY_BROKER_URL")
        if name == "REDIS_URL" or set(argv) & set(_USES_BROKER)
    ],
)
def test_a_malformed_url_stops_a_process_without_showing_its_password(
    argv: list[str], name: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY", "REDIS", "API_"))}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env[name] = f"redis://api:{PASSWORD}@cache:notaport/0"
    env["API_BIND"] = f"127.0.0.1:{free_port()}"  # never whatever holds 8000 here
    env["RUN_DIR"] = str(tmp_path)  # `make run`'s files, never in the checkout
    result = subprocess.run(
        [str(BIN / argv[0]), *argv[1:]], cwd=ROOT, env=env, capture_output=True, timeout=60,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    output = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode != 0, output
    assert name in output, output
    assert PASSWORD not in output, output
