"""Real processes for integration tests: started on free ports, stopped by PID.

Every process a test starts gets a unique PREDICTION_CACHE_TEST_RUN marker in its
environment, inherited by all its children (Celery's pool, gunicorn's workers), so
that a test can prove nothing was left behind by scanning /proc for the marker.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import redis

from scripts.embedded_redis import server_args
from tests.harness.ports import accepts, free_port

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MARKER = "PREDICTION_CACHE_TEST_RUN"


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


def until(condition: Callable[[], object], timeout: float, interval: float = 0.02) -> bool:
    """Poll until condition() is truthy, for at most ``timeout`` seconds; whether it
    became so. Unlike wait_for, an exception is raised, not retried: for conditions
    whose failure is the test's (a refused answer, a connection closed)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
    return True


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
        self.terminated = False  # sent SIGTERM by terminate(), not yet waited for

    def start(self) -> Process:
        self.terminated = False
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

    def terminate(self) -> None:
        """SIGTERM without waiting, so that several processes shut down side by side;
        stop() then waits for it."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            self.terminated = True

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL to the whole group if it does not exit in time."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            if not self.terminated:
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


# What the integration suite's `start` fixture is: start("api" | "worker" | "beat",
# name=None, **env overrides) -> a running Process.
ProcessFactory = Callable[..., Process]


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def pairs_argv(*args: str) -> list[str]:
    """The pairs command (README: `python -m predictions.pairs`), as the project runs it."""
    return [str(BIN / "python"), "-m", "predictions.pairs", *args]


def run_pairs(
    env: Mapping[str, str], *args: str, argv: Sequence[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The pairs command run to its end with ``env`` (REDIS_URL and the settings):
    its exit status and what it printed. ``argv`` replaces pairs_argv(*args) (a command
    run on another host, tests/harness/netns.py)."""
    return subprocess.run(
        list(argv) if argv is not None else pairs_argv(*args),
        cwd=ROOT, env=dict(env), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


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
        self.extra_args: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(port=self.port, db=db, socket_timeout=2, socket_connect_timeout=2)

    def start(self) -> RedisServer:
        argv = server_args(
            self.port, self.data_dir, "--save", "", "--appendonly", "no", *self.extra_args
        )
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


def find_rabbitmq_server() -> str | None:
    """RabbitMQ's own start script, run as the current user.

    Debian's /usr/sbin/rabbitmq-server switches to the rabbitmq user and its files in
    /var/lib/rabbitmq; the script it wraps takes every path from the environment.
    """
    debian = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
    if os.access(debian, os.X_OK):
        return str(debian)
    return shutil.which("rabbitmq-server")


class RabbitMQServer:
    """A real RabbitMQ node of its own: free ports, files in a temporary directory.

    It registers with an epmd of its own (started here in the foreground, on a free
    loopback port, stopped by PID) and never starts one itself, so a machine's own
    RabbitMQ and epmd (4369) are neither used nor disturbed. Its Erlang cookie is
    written in its own HOME.
    """

    def __init__(self, base: Path, log_dir: Path) -> None:
        self.base = base
        self.log_dir = log_dir
        self.port = free_port()
        self.dist_port = free_port()
        self.epmd_port = free_port()
        self.node = f"rabbit-test-{uuid.uuid4().hex[:8]}@localhost"
        self.epmd: Process | None = None
        self.process: Process | None = None

    @property
    def url(self) -> str:
        # RabbitMQ's default user may log in over loopback only; this is loopback.
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def start(self, script: str, timeout: float = 90) -> RabbitMQServer:
        home = self.base / "home"
        for folder in (home, self.base / "mnesia", self.base / "log"):
            folder.mkdir(parents=True, exist_ok=True)
        plugins = self.base / "enabled_plugins"
        plugins.write_text("[].\n")  # no management plugin: nothing else listens
        epmd_env = {**os.environ, "ERL_EPMD_ADDRESS": "127.0.0.1"}
        self.epmd = Process(
            "epmd", ["epmd", "-port", str(self.epmd_port)], epmd_env, self.log_dir
        ).start()
        wait_for(lambda: accepts(self.epmd_port), 10, what=f"epmd on {self.epmd_port}")
        env = {
            **os.environ,
            "HOME": str(home),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-start_epmd false",
        }
        self.process = Process("rabbitmq", [script], env, self.log_dir).start()
        # An Erlang node is slow to boot on a loaded machine (~25 s seen here).
        wait_for(
            lambda: self.process.running() and "completed with" in self.process.output(),  # type: ignore[union-attr]
            timeout,
            interval=0.25,
            what=f"rabbitmq-server on port {self.port}",
        )
        wait_for(lambda: accepts(self.port), 10, what=f"AMQP on port {self.port}")
        return self

    def stop(self) -> None:
        for process in (self.process, self.epmd):
            if process is not None:
                process.stop(timeout=30)
