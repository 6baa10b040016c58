"""`make run`: Redis, the Celery worker, beat and the API, stopped in dependency order.

    python -m scripts.run

Without REDIS_URL a Redis of its own starts on a free port (data in $RUN_DIR/redis,
RUN_DIR defaulting to .run), and its URL is written to $RUN_DIR/redis-url for the
tools (`make rollout`, `make celery`, `make forget`) while it runs. PRECOMPUTE=off
starts no worker and no beat: the API alone, computing every pair on request.

Hand-written on purpose: honcho (used before) and foreman stop every process at the
same moment, so on Ctrl-C during a refresh Redis vanished under the worker's warm
shutdown (hundreds of lines of tracebacks); supervisord orders stops but is a daemon
with its own config files. This starts each process after what it needs and stops
them in the reverse order (API, beat, worker, then Redis), each given time to finish.

With LOG_FORMAT=json every line is one JSON object with a "source" field naming the
process (a line a process printed as plain text, such as redis-server's, is wrapped as
{"source", "message", "raw": true}); with LOG_FORMAT=text, lines are prefixed by it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import datetime
import errno
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import orjson
import redis

from predictions.infra.redaction import redact
from predictions.settings import Settings, SettingsError
from scripts.embedded_redis import free_port, server_args

ROOT = Path(__file__).resolve().parent.parent

# What each process runs, from the repository root (the README's commands; the
# Dockerfile and docker-compose.yml run the same, tests/deployment/test_deployment.py checks).
COMMANDS: dict[str, list[str]] = {
    "worker": ["celery", "-A", "worker", "worker", "--loglevel=INFO"],
    "beat": ["celery", "-A", "worker", "beat", "--loglevel=INFO"],
    "api": ["gunicorn", "api.wsgi:app"],
}
# Stopped first to last: the API stops taking requests, beat stops sending refreshes,
# the worker finishes the refresh it runs (its warm shutdown needs Redis), then Redis
# saves its data and exits.
STOP_ORDER = ("api", "beat", "worker", "redis")
REDIS_START_SECONDS = 15.0


class Child:
    """One process, in its own process group: a terminal's Ctrl-C reaches only us."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], out: Output) -> None:
        self.name = name
        self.popen = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            process_group=0,
            preexec_fn=_die_with_parent,  # safe after fork: only a prctl call in the child
        )
        self.reader = threading.Thread(target=self._copy, args=(out,), daemon=True)
        self.reader.start()
        out.say(f"{name} started (pid {self.popen.pid})")

    def _copy(self, out: Output) -> None:
        if self.popen.stdout is None:
            return
        for raw in iter(self.popen.stdout.readline, b""):
            out.line(self.name, raw.rstrip(b"\r\n"))

    def running(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float, out: Output) -> None:
        """SIGTERM (each process's graceful stop), then SIGKILL after ``timeout``."""
        if self.running():
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                out.say(f"{self.name} did not stop within {timeout:g} s: killed")
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)  # its children too (pool, workers)
        except (ProcessLookupError, PermissionError):
            pass
        self.popen.wait(5)
        self.reader.join(2)
        out.say(f"{self.name} stopped (exit {self.popen.returncode})")


class Output:
    """Every process's lines on our stdout, one whole line at a time."""

    def __init__(self, log_format: str, stream: IO[bytes]) -> None:
        self.json = log_format == "json"
        self.stream = stream
        self.lock = threading.Lock()
        self.width = max(len(name) for name in (*COMMANDS, "redis", "run"))

    def line(self, source: str, raw: bytes) -> None:
        if self.json:
            data = _json_object(raw)
            if data is None:
                data = {"source": source, "message": raw.decode(errors="replace"), "raw": True}
            else:
                data["source"] = source
            text = orjson.dumps(data)
        else:
            stamp = datetime.datetime.now().strftime("%H:%M:%S")
            text = f"{stamp} {source:<{self.width}} | ".encode() + raw
        with self.lock:
            self.stream.write(redact(text.decode(errors="replace")).encode() + b"\n")
            self.stream.flush()

    def say(self, message: str) -> None:
        if self.json:
            message = orjson.dumps(
                {
                    "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
                    "level": "INFO",
                    "logger": "scripts.run",
                    "message": message,
                    "source": "run",
                }
            ).decode()
            with self.lock:
                self.stream.write(redact(message).encode() + b"\n")
                self.stream.flush()
            return
        self.line("run", message.encode())


def _json_object(raw: bytes) -> dict[str, Any] | None:
    if not raw.startswith(b"{"):
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _libc_prctl() -> Any:
    name = ctypes.util.find_library("c")
    if sys.platform != "linux" or name is None:
        return None
    return ctypes.CDLL(name, use_errno=True).prctl


_PRCTL = _libc_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: get SIGTERM if we die (even by SIGKILL), so nothing is orphaned."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def port_in_use(bind: str) -> bool:
    """Whether HOST:PORT cannot be bound now (another server listens there)."""
    if bind.startswith("unix:"):
        return False
    host, _, port = bind.rpartition(":")
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # As gunicorn binds: SO_REUSEADDR, so a port in TIME_WAIT is not "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host.strip("[]"), int(port)))
        except OSError as exc:
            return exc.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def stop_timeouts(settings: Settings) -> dict[str, float]:
    """How long each process may take to stop before it is killed."""
    # gunicorn's graceful timeout is the compute timeout + 5 (gunicorn.conf.py); a
    # refresh batch may run its soft time limit (worker/celery_app.py) at worst, but
    # usually it is a few model latencies: wait that long, plus a margin.
    api = settings.compute_timeout_seconds + 10
    worker = settings.compute_timeout_seconds + 4 * settings.simulated_model_latency_seconds + 15
    return {"api": api, "beat": 10.0, "worker": worker, "redis": 30.0}


def wait_for_redis(url: str, child: Child | None, timeout: float) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child is not None and not child.running():
            return False
        try:
            client.ping()
            return True
        except redis.RedisError:
            time.sleep(0.1)
    return False


def main() -> int:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"make run: {exc}", file=sys.stderr)
        return 2
    out = Output(settings.log_format, sys.stdout.buffer)
    # Before anything starts: a second `make run`, or anything else on the port.
    if port_in_use(settings.api_bind):
        print(
            f"make run: {settings.api_bind} is already in use, so the API cannot listen "
            f"there (API_BIND={settings.api_bind}): stop what listens on it, or run "
            "make run API_BIND=127.0.0.1:8001",
            file=sys.stderr,
        )
        return 1
    precompute = settings.precompute != "off"
    run_dir = Path(os.environ.get("RUN_DIR") or ROOT / ".run").resolve()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if settings.log_format == "json":
        # Celery's start-up banners are printed art, not log lines: off, as `celery -q`.
        env.setdefault("CELERY_QUIET", "1")
    children: dict[str, Child] = {}
    stopping = threading.Event()
    interrupted: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        interrupted.append(signum)
        stopping.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    url_file = run_dir / "redis-url"
    failed = False
    try:
        if not os.environ.get("REDIS_URL"):
            port = int(os.environ.get("EMBEDDED_REDIS_PORT") or free_port())
            url = f"redis://127.0.0.1:{port}/0"
            env["REDIS_URL"] = url
            argv = server_args(port, run_dir / "redis", "--loglevel", "warning")
            out.say(f"embedded Redis {argv[0]} on {url} (data in {run_dir / 'redis'})")
            children["redis"] = Child("redis", argv, env, out)
            if not wait_for_redis(url, children["redis"], REDIS_START_SECONDS):
                out.say("Redis did not start: see its lines above")
                return 1
            # For `make rollout`, `make celery`, `make forget` in another terminal.
            url_file.write_text(url + "\n")
        else:
            out.say("using the Redis at REDIS_URL")
            if not wait_for_redis(env["REDIS_URL"], None, 30):
                out.say("the Redis at REDIS_URL does not answer")
                return 1
        for name in ("worker", "beat", "api") if precompute else ("api",):
            if stopping.is_set():
                break
            children[name] = Child(name, COMMANDS[name], env, out)
        if not precompute:
            out.say("PRECOMPUTE=off: no worker and no beat; every pair is computed on request")
        out.say(f"API on http://{settings.api_bind}; Ctrl-C stops everything")
        while not stopping.wait(0.2):
            exited = [child for child in children.values() if not child.running()]
            if exited:
                out.say(f"{exited[0].name} exited ({exited[0].popen.returncode}): stopping")
                failed = True
                break
    finally:
        # Further Ctrl-Cs while stopping are ignored: the stop is already under way.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        timeouts = stop_timeouts(settings)
        for name in STOP_ORDER:
            if name in children:
                children[name].stop(timeouts[name], out)
        if "redis" in children:
            url_file.unlink(missing_ok=True)
    if failed:
        return 1
    return 130 if signal.SIGINT in interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
