"""Real processes for integration tests: started on free ports, stopped by PID.

Every process a test starts gets a unique PREDICTION_CACHE_TEST_RUN marker in its
environment, inherited by all its children (Celery's pool, gunicorn's workers), so
that a test can prove nothing was left behind by scanning /proc for the marker.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import redis

from scripts.embedded_redis import server_args

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
MARKER = "PREDICTION_CACHE_TEST_RUN"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    condition: Callable[[], object],
    timeout: float,
    interval: float = 0.05,
    what: str = "",
    fail: bool = True,
) -> object:
    """Poll until condition() is truthy; fail with ``what`` after ``timeout`` seconds
    (or, with fail=False, return the last falsy result)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition()
        except Exception:  # the thing polled may not be up yet
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            if not fail:
                return result
            raise TimeoutError(f"not within {timeout:g} s: {what or condition}")
        time.sleep(interval)


class Process:
    """A subprocess in its own process group, with its output in a log file."""

    def __init__(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_dir / f"{name}.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL to the whole group if it does not exit in time."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        _kill_group(self.pid)
        self.popen.wait(5)
        return self.popen.returncode

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def count(self, text: str) -> int:
        return self.output().count(text)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def processes_with_marker(run_id: str) -> list[int]:
    """PIDs of live processes whose environment carries this run's marker."""
    needle = f"{MARKER}={run_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                stat = (entry / "stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] != "Z":  # zombies hold nothing
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def new_run_id() -> str:
    return uuid.uuid4().hex


class RedisServer:
    """A real redis-server on a free port, restartable on the same port."""

    def __init__(self, data_dir: Path, log_dir: Path) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.log_dir = log_dir
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(port=self.port, db=db, socket_timeout=2, socket_connect_timeout=2)

    def start(self) -> RedisServer:
        argv = server_args(self.port, self.data_dir, "--save", "", "--appendonly", "no")
        self.process = Process("redis", argv, os.environ, self.log_dir).start()
        wait_for(lambda: self.client().ping(), 10, what=f"redis-server on port {self.port}")
        return self

    def kill(self) -> None:
        """SIGKILL: the server vanishes as in a crash."""
        assert self.process is not None
        self.process.signal(signal.SIGKILL)
        self.process.popen.wait(5)  # type: ignore[union-attr]

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
