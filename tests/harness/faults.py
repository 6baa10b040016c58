"""Faults injected into real processes, and what drives and watches the system meanwhile.

Redis killed or frozen; a process tree to prove nothing restarted; load from threads
that keep requests coming throughout (Hammer, LoadGenerator) and the bar every answer
is held to; a monitor that samples every pair's freshness in Redis while a test kills
workers.
"""

from __future__ import annotations

import dataclasses
import http.client
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import urllib3

from predictions.model.prediction import parse_time
from tests.harness.http import Answer
from tests.harness.processes import Process, RedisServer
from tests.harness.store import stored
from tests.harness.system import PAIRS, TEST_REFRESH, TEST_TTL, TEST_VERSION

# No pair's newest prediction may be older than this (the bar of worker faults).
FRESHNESS_BOUND = 2 * TEST_REFRESH + TEST_TTL


@contextmanager
def killed(redis_server: RedisServer) -> Iterator[None]:
    """Redis SIGKILLed, as in a crash; restarted, empty, on the same port on exit."""
    redis_server.kill()
    try:
        yield
    finally:
        redis_server.start()


@contextmanager
def frozen(redis_server: RedisServer) -> Iterator[None]:
    """Redis SIGSTOPped: connections are accepted, nothing is answered; SIGCONT on exit."""
    assert redis_server.process is not None
    redis_server.process.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        redis_server.process.signal(signal.SIGCONT)


def children(pid: int) -> set[int]:
    """The PIDs of a process's direct children (gunicorn workers, Celery's pool)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found.update(int(child) for child in (task / "children").read_text().split())
        except OSError:
            continue
    return found


def process_tree(*processes: Process) -> dict[str, tuple[int, frozenset[int]]]:
    """Each process's PID and its children's: equal before and after = nothing restarted."""
    return {p.name: (p.pid, frozenset(children(p.pid))) for p in processes}


def wchan(pid: int) -> str:
    """Where in the kernel a process sleeps: hrtimer_nanosleep while in time.sleep."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return ""


class LogCursor:
    """The part of a process's log written after a point in time."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.offset = len(process.output())

    def text(self) -> str:
        return self.process.output()[self.offset :]

    def count(self, text: str) -> int:
        return self.text().count(text)


class FreshnessMonitor:
    """Samples every pair in Redis every ~100 ms: absent keys, and the age of the newest
    prediction seen for the pair (so a pair absent for long also grows old)."""

    def __init__(
        self,
        redis_server: RedisServer,
        interval: float = 0.1,
        bound: float = FRESHNESS_BOUND,
        pairs: list[str] = PAIRS,
        version: str = TEST_VERSION,
    ) -> None:
        self.client = redis_server.client()
        self.interval = interval
        self.bound = bound
        self.pairs = pairs
        self.version = version
        # (Unix time, pair, present, age of the newest prediction seen)
        self.samples: list[tuple[float, str, bool, float]] = []
        self._newest: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run)

    def __enter__(self) -> FreshnessMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.client.close()

    def absent(self, since: float, until: float = float("inf")) -> list[tuple[float, str]]:
        return [
            (t, pair) for t, pair, present, _ in self.samples if since <= t < until and not present
        ]

    def too_old(self, since: float, until: float = float("inf")) -> list[tuple[float, str, float]]:
        """Samples whose newest prediction was older than the bound."""
        return [
            (t, pair, age)
            for t, pair, _, age in self.samples
            if since <= t < until and age > self.bound
        ]

    def oldest(self, since: float, until: float = float("inf")) -> float:
        return max((age for t, _, _, age in self.samples if since <= t < until), default=0.0)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            now = time.time()
            for pair in self.pairs:
                entry = stored(self.client, pair, self.version)
                if entry is not None:
                    computed = parse_time(entry["computed_at"], pair)
                    self._newest[pair] = max(self._newest.get(pair, 0.0), computed)
                age = now - self._newest.get(pair, now)
                self.samples.append((now, pair, entry is not None, age))


class Hammer:
    """A thread sending requests back to back on one keep-alive connection.

    http.client rather than urllib3: the less the client spends per request, the more
    the timings are the API's.
    """

    def __init__(self, api: Process, paths: list[str]) -> None:
        host, port = api.env["API_BIND"].rsplit(":", 1)
        self.connection = http.client.HTTPConnection(host, int(port), timeout=5)
        self.paths = paths
        self.answers: list[Answer] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Hammer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        self.connection.close()

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set():
            path = self.paths[index % len(self.paths)]
            try:
                started = time.monotonic()
                self.connection.request("GET", path)
                response = self.connection.getresponse()
                body = orjson.loads(response.read())
                seconds = time.monotonic() - started
            except Exception as exc:  # reported by the test, not lost in the thread
                self.errors.append(exc)
                return
            self.answers.append(Answer(response.status, response.headers, body, seconds, started))
            index += 1


# Every request is answered within this, whatever the fault (check_answers' default).
ANSWER_WITHIN = 2.0


@dataclasses.dataclass(frozen=True)
class Sample:
    sent: float  # time.monotonic() when the request was sent
    pair: str
    status: int | None  # None: no answer within the client's timeout
    cache: str | None
    retry_after: str | None
    stale: object
    seconds: float
    expired_for: float = 0.0  # how long before the request its prediction had expired
    error: str = ""


class LoadGenerator:
    """About ``rate`` requests a second over the pairs, from a few threads, until stopped.

    Each thread sends on its own fixed schedule and skips what it missed rather than
    bursting to catch up, so a slow API sees the same offered load throughout. The
    client's timeout is well past ANSWER_WITHIN: a slow answer is measured, not cut.
    """

    def __init__(
        self,
        api: Process,
        rate: float = 100,
        threads: int = 16,
        timeout: float = 5.0,
        max_seconds: float = 60,
        pairs: list[str] = PAIRS,
    ) -> None:
        self.base = f"http://{api.env['API_BIND']}"
        self.period = threads / rate
        self.threads = threads
        self.max_seconds = max_seconds
        self.pairs = pairs
        self.http = urllib3.PoolManager(
            maxsize=threads, retries=False, timeout=urllib3.Timeout(total=timeout)
        )
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> LoadGenerator:
        started = time.monotonic()
        for index in range(self.threads):
            offset = self.period * index / self.threads
            thread = threading.Thread(target=self._run, args=(index, started + offset))
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(15)
        self.http.clear()
        assert not any(t.is_alive() for t in self._threads), "load threads did not stop"

    def since(self, moment: float, until: float = float("inf")) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if moment <= s.sent < until]

    def _run(self, index: int, next_at: float) -> None:
        ends = time.monotonic() + self.max_seconds
        count = 0
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            now = time.monotonic()
            if now > ends:
                return
            pair = self.pairs[(index + count) % len(self.pairs)]
            count += 1
            sample = self._request(pair)
            with self._lock:
                self.samples.append(sample)
            next_at += self.period
            if next_at < time.monotonic():  # fell behind: skip, do not burst
                next_at = time.monotonic()

    def _request(self, pair: str) -> Sample:
        sent = time.monotonic()
        sent_at = time.time()
        try:
            response = self.http.request("GET", f"{self.base}/predict/{pair}")
        except urllib3.exceptions.HTTPError as exc:
            seconds = time.monotonic() - sent
            return Sample(sent, pair, None, None, None, None, seconds, error=repr(exc))
        seconds = time.monotonic() - sent
        stale: object = None
        expired_for = 0.0
        if response.status == 200:
            body = orjson.loads(response.data)
            stale = body.get("stale")
            expired_for = sent_at - parse_time(body["fresh_until"], pair)
        return Sample(
            sent,
            pair,
            response.status,
            response.headers.get("X-Cache"),
            response.headers.get("Retry-After"),
            stale,
            seconds,
            expired_for,
        )


def check_answers(samples: list[Sample], within: float = ANSWER_WITHIN) -> None:
    """The bar for every request under a Redis fault: quick, and 200 or a 503 to retry."""
    unanswered = [s for s in samples if s.status is None]
    assert not unanswered, f"{len(unanswered)} requests got no answer: {unanswered[:3]}"
    slow = [s for s in samples if s.seconds >= within]
    assert not slow, f"{len(slow)} answers took {within} s or more: {slow[:3]}"
    assert not [s for s in samples if s.status == 500]
    kinds = {(s.status, s.cache if s.status == 200 else s.retry_after) for s in samples}
    allowed = {(200, "HIT"), (200, "MISS"), (200, "STALE"), (503, "1")}
    assert kinds <= allowed, kinds - allowed
    # Only a stale answer says so, and it always does.
    assert all((s.stale is True) == (s.cache == "STALE") for s in samples if s.status == 200)
    # A fresh answer had not expired before it was asked for (slack: ms rounding).
    expired = [s for s in samples if s.cache in ("HIT", "MISS") and s.expired_for > 0.01]
    assert not expired, f"{len(expired)} expired predictions served as fresh: {expired[:3]}"


def summary(samples: list[Sample]) -> dict[str, int]:
    """How many answers of each status and X-Cache ("200 HIT": 95, "503": 3)."""
    counts: dict[str, int] = {}
    for s in samples:
        key = f"{s.status} {s.cache or ''}".strip()
        counts[key] = counts.get(key, 0) + 1
    return counts
