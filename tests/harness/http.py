"""Requests to an API process started by a test, and what its log says it computed.

The one small HTTP client of the suite (urllib3, a pool shared by the tests): a test that
needs misbehaving connections or sustained load uses tests/harness/load.py instead.
"""

from __future__ import annotations

import functools
import http.client
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import orjson
import urllib3

from tests.harness.processes import Process, wait_for

HTTP = urllib3.PoolManager(maxsize=64, retries=False, timeout=urllib3.Timeout(total=15))


@dataclass
class Answer:
    status: int
    headers: Any
    body: dict[str, Any]
    seconds: float
    started: float  # time.monotonic() when the request was sent


def get(api: Process, path: str, method: str = "GET", http: urllib3.PoolManager = HTTP) -> Answer:
    """One request to the API process; its body decoded as JSON ({} when empty)."""
    started = time.monotonic()
    response = http.request(method, f"http://{api.env['API_BIND']}{path}")
    seconds = time.monotonic() - started
    body = orjson.loads(response.data) if response.data else {}
    return Answer(response.status, response.headers, body, seconds, started)


def computations(process: Process, pair: str) -> int:
    """How many times the process ran the model for the pair."""
    return process.count(f"computed prediction pair={pair} ")


def log_records(process: Process) -> list[dict[str, Any]]:
    """The process's JSON log lines (LOG_FORMAT=json), decoded; other lines skipped."""
    records = []
    for line in process.output().splitlines():
        if line.startswith("{"):
            records.append(orjson.loads(line))
    return records


@dataclass
class WorkerConnection:
    """A keep-alive connection that one gunicorn worker process accepted: every request
    sent on it is answered by that process (``pid``)."""

    pid: int
    connection: http.client.HTTPConnection
    socket: object = field(repr=False)

    def get(self, path: str) -> Answer:
        """One request on this connection; fails rather than reconnect (a new connection
        could be another process's)."""
        if self.connection.sock is not self.socket:
            raise ConnectionError(f"the connection to API process {self.pid} was closed")
        started = time.monotonic()
        self.connection.request("GET", path)
        response = self.connection.getresponse()
        data = response.read()
        seconds = time.monotonic() - started
        if self.connection.sock is not self.socket:
            raise ConnectionError(f"API process {self.pid} closed the connection")
        body = orjson.loads(data) if data else {}
        return Answer(response.status, response.headers, body, seconds, started)

    def close(self) -> None:
        self.connection.close()


def connection_to_each_worker(api: Process, attempts: int = 200) -> dict[int, WorkerConnection]:
    """One keep-alive connection to each of the API's gunicorn worker processes (by PID).

    gunicorn's workers share one listening socket, so the kernel picks which accepts a
    new connection, and it serves that connection's requests from then on. Each new
    connection sends one request of a path of its own (a 404), whose access-log line
    names the process that answered; new connections are opened until every worker
    (API_WORKERS) holds one. Keep the API's idle timeout (API_HEADER_TIMEOUT_SECONDS)
    longer than the gaps between a test's requests.
    """
    host, port = api.env["API_BIND"].rsplit(":", 1)
    wanted = int(api.env.get("API_WORKERS", "2"))
    found: dict[int, WorkerConnection] = {}
    for _ in range(attempts):
        connection = http.client.HTTPConnection(host, int(port), timeout=15)
        probe = f"/which-process-{uuid.uuid4().hex}"
        connection.request("GET", probe)
        connection.getresponse().read()
        answered = functools.partial(_answered_by, api, probe)
        pid = wait_for(answered, 10, what=f"the access log of {probe}")
        assert isinstance(pid, int)
        if pid in found or connection.sock is None:
            connection.close()
            continue
        found[pid] = WorkerConnection(pid, connection, connection.sock)
        if len(found) == wanted:
            return found
    for held in found.values():
        held.close()
    raise RuntimeError(f"{attempts} connections reached {len(found)} of {wanted} API processes")


def _answered_by(api: Process, path: str) -> int | None:
    for record in log_records(api):
        if record.get("logger") == "api.access" and record.get("path") == path:
            return int(record["process"])
    return None
