"""scripts/time_requests.py: its arithmetic, and the real script against a stub API."""

from __future__ import annotations

import http.server
import importlib.util
import json
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "time_requests.py"
LINE = re.compile(r"Time taken: (\d+\.\d\d)ms  (.+)")

_spec = importlib.util.spec_from_file_location("time_requests", SCRIPT)
assert _spec is not None and _spec.loader is not None
tr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tr)


def _labels(lines: list[str]) -> list[str]:
    """What follows the time on each "Time taken" line; a line of another shape as it is."""
    return [m.group(2) if (m := LINE.fullmatch(line)) else line for line in lines]


@pytest.mark.parametrize(
    ("p", "expected"), [(0, 1), (1, 1), (50, 50), (90, 90), (99, 99), (99.5, 100), (100, 100)]
)
def test_percentile_is_nearest_rank(p: float, expected: float) -> None:
    assert tr.percentile([float(v) for v in range(100, 0, -1)], p) == expected


def test_percentile_ranks_are_not_pushed_up_by_float_error() -> None:
    assert tr.percentile(list(range(1, 101)), 7) == 7  # 0.07 * 100 would be 7.000000000000001
    assert tr.percentile([], 50) is None


@given(st.floats(min_value=0.001, max_value=1e7))
def test_every_latency_falls_within_its_bucket(ms: float) -> None:
    index = tr.bucket(ms)
    assert tr.edge(index) <= ms < tr.edge(index + 1)


@pytest.mark.parametrize(
    ("status", "x_cache", "body", "expected"),
    [
        (200, "hit", b"{}", "HIT"),
        (200, None, b"{}", "200 but X-Cache is missing"),
        (503, None, b'{"error": {"code": "cache_unavailable"}}', "503 cache_unavailable"),
        (502, None, b"<html>Bad Gateway</html>", "502 Bad Gateway"),
    ],
)
def test_outcome(status: int, x_cache: str | None, body: bytes, expected: str) -> None:
    assert tr.outcome(status, "Bad Gateway", x_cache, body) == expected


def test_histogram_shows_every_kind_and_the_empty_buckets_between() -> None:
    drawn = tr.histogram([(1.5, "HIT"), (1.2, "STALE"), (1500.0, "MISS"), (None, "lost")])
    lines = drawn.splitlines()
    assert lines[0] == "       1-2  HS 2"
    assert lines[-2] == " 1000-2000  M 1"
    assert len(lines) == 11  # 1-2 ms up to 1000-2000 ms, and the legend


# --- the real script against a stub API --------------------------------------------------


class StubAPI(http.server.BaseHTTPRequestHandler):
    """Answers GET /predict/<PAIR> with the next scripted answer: HIT, STALE, MISS, 503, SLOW."""

    protocol_version = "HTTP/1.1"  # keep-alive, as gunicorn does
    server: StubServer

    def do_GET(self) -> None:
        answer = self.server.record(self)
        if answer == "SLOW":  # answers HIT, but only once the test lets it (or after 5 s)
            self.server.release.wait(5)
            answer = "HIT"
        status, headers = 200, {"X-Cache": answer}
        body: dict[str, object] = {"pair": "ETH-EUR", "predicted_price": 2000.5}
        if answer == "503":
            status, headers = 503, {}
            body = {"error": {"status": 503, "code": "cache_unavailable", "message": "down"}}
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        # Closed without a "Connection: close" header, as an idle keep-alive timeout does.
        self.close_connection = self.server.drop_connections

    def log_message(self, format: str, *args: object) -> None:
        pass


class StubServer(http.server.ThreadingHTTPServer):
    def __init__(self, answers: list[str], drop_connections: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), StubAPI)
        self.answers = iter(answers)
        self.drop_connections = drop_connections
        self.release = threading.Event()
        self.seen: list[tuple[int, str]] = []  # client port, path
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def record(self, request: StubAPI) -> str:
        with self._lock:
            self.seen.append((request.client_address[1], request.path))
            return next(self.answers, "HIT")


@pytest.fixture
def stub_api() -> Iterator[Callable[..., StubServer]]:
    servers: list[tuple[StubServer, threading.Thread]] = []

    def start(answers: list[str], drop_connections: bool = False) -> StubServer:
        server = StubServer(answers, drop_connections)
        thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        servers.append((server, thread))
        return server

    yield start
    for server, thread in servers:
        server.release.set()
        server.shutdown()
        thread.join(5)
        server.server_close()


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=20
    )


def test_times_every_request_over_one_kept_alive_connection(
    stub_api: Callable[..., StubServer],
) -> None:
    server = stub_api(["MISS", "HIT", "503", "STALE", "HIT"])
    out = run_script("--count", "5", "--interval", "0", "--url", server.url, "--histogram")

    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert _labels(lines[:5]) == ["MISS", "HIT", "503 cache_unavailable", "STALE", "HIT"]
    assert lines[5] == f"--- 5 requests to {server.url}/predict/ETH-EUR over 1 connection(s)"
    assert lines[6] == "hit ratio: 50.0% (2 of 4 predictions, 1 stale)   errors: 1"
    hits = sorted(m.group(1) for m in map(LINE.fullmatch, lines[:5]) if m and m[2] == "HIT")
    # Nearest-rank of two values: p50 is the faster one; p90, p99 and max the slower one.
    assert lines[8].split() == ["hits", "2", hits[0], hits[1], hits[1], hits[1]]
    assert [line.split()[:2] for line in lines[9:11]] == [["stale", "1"], ["misses", "1"]]
    assert lines[-1] == "ms, log scale; H hit, S stale, M miss, E error"
    assert sum(line.count(letter) for line in lines[11:-1] for letter in "HSME") == 5
    # One TCP connection (one client port) carried all five requests.
    assert {port for port, _ in server.seen} == {server.seen[0][0]}
    assert {path for _, path in server.seen} == {"/predict/ETH-EUR"}


def test_reconnects_when_the_server_drops_the_idle_connection(
    stub_api: Callable[..., StubServer],
) -> None:
    server = stub_api(["HIT", "HIT", "HIT"], drop_connections=True)
    out = run_script("--count", "3", "--interval", "0", "--url", server.url)

    assert out.returncode == 0, out.stdout + out.stderr
    assert _labels(out.stdout.splitlines()[:3]) == ["HIT", "HIT", "HIT"]
    assert "over 3 connection(s)" in out.stdout
    assert "errors: 0" in out.stdout


def test_a_timed_out_request_is_an_error_and_its_late_answer_is_not_misread(
    stub_api: Callable[..., StubServer],
) -> None:
    server = stub_api(["SLOW", "MISS", "HIT"])
    out = run_script("--count", "3", "--interval", "0", "--timeout", "0.3", "--url", server.url)

    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "No answer: no answer within 0.3 s"
    assert _labels(lines[1:3]) == ["MISS", "HIT"]
    assert "errors: 1" in out.stdout


def test_only_errors_exit_1(stub_api: Callable[..., StubServer]) -> None:
    server = stub_api(["503", "503"])
    out = run_script("--count", "2", "--interval", "0", "--url", server.url)

    assert out.returncode == 1
    assert "every request failed" in out.stderr
    assert "Traceback" not in out.stderr


def test_nothing_listening_exits_1_with_a_clear_message() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago, so likely still is
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = run_script("--count", "3", "--interval", "0", "--url", f"http://127.0.0.1:{port}")

    assert out.returncode == 1
    assert out.stderr == f"no answer from http://127.0.0.1:{port}: is the API running? (make run)\n"
    (line,) = out.stdout.splitlines()  # it gives up after the first refusal
    assert re.fullmatch(rf"No answer: cannot connect to 127\.0\.0\.1:{port}: .*refused", line)


@pytest.mark.parametrize(
    "args", [["--count", "0"], ["--count", "1.5"], ["--interval", "-1"], ["--url", "ftp://x"]]
)
def test_a_bad_argument_exits_2(args: list[str]) -> None:
    out = run_script(*args)
    assert out.returncode == 2
    assert out.stdout == ""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.timeout(20)
def test_ctrl_c_prints_the_summary_so_far_and_exits_130(
    stub_api: Callable[..., StubServer],
) -> None:
    server = stub_api(["HIT"])
    # Through a shim that restores Python's SIGINT handler, which a parent that ignores
    # SIGINT (a background job, some CI runners) would otherwise pass on as ignored.
    shim = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler);"
        "sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    args = [str(SCRIPT), "--count", "5", "--interval", "30", "--url", server.url]
    with subprocess.Popen(
        [sys.executable, "-c", shim, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # the first answer; it is now waiting 30 s
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=10)

    assert LINE.fullmatch(first.rstrip("\n"))
    assert proc.returncode == 130
    assert "Traceback" not in stderr
    assert "interrupted after 1 of 5 requests" in stdout
    assert "hit ratio: 100.0% (1 of 1 predictions, 0 stale)" in stdout
