"""Requests to an API process started by a test, and what its log says it computed.

The one small HTTP client of the suite (urllib3, a pool shared by the tests): a test that
needs misbehaving connections or sustained load uses tests/harness/load.py instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import orjson
import urllib3

from tests.harness.processes import Process

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
