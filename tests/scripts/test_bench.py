"""The benchmark's machinery (scripts/bench/): reading wrk, its tables, its targets.

Nothing here starts a server or loads anything heavy; the one test that runs wrk does
so for a second against a stub on loopback, and is skipped where wrk is not installed.
"""

from __future__ import annotations

import asyncio
import http.server
import itertools
import shutil
import socket
import threading
import types
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from scripts.bench import wrk
from scripts.bench.phases import Table, ask, ratio, rotated
from scripts.bench.run import REPORT, TABLES_BELOW
from scripts.bench.targets import (
    FLASK_CACHING,
    FLOOR,
    FLOOR_GET,
    OURS,
    Broken,
    base_env,
    gunicorn_argv,
    refresh_samples,
)

# A real run: wrk 4.1.0 -t2 -c32 -d2s with spread.lua against the constant-JSON floor.
WRK_OUTPUT = """\
Running 2s test @ http://127.0.0.1:18125
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    23.03ms   22.13ms 132.72ms   82.24%
    Req/Sec   845.12    308.83     1.48k    62.50%
  3403 requests in 2.02s, 1.29MB read
Requests/sec:   1681.38
Transfer/sec:    654.65KB
BENCH_RESULT {"requests": 3403, "duration_us": 2023936, "misses": 0, "non2xx": 0, \
"errors": 0, "latency_us": {"p50": 16970, "p90": 53564, "p99": 92104}}
"""


def test_parse_output_reads_the_scripts_line() -> None:
    result = wrk.parse_output(WRK_OUTPUT)
    assert result.requests == 3403
    assert result.rps == pytest.approx(1681.38, abs=0.01)
    assert (result.p50_ms, result.p90_ms, result.p99_ms) == (16.97, 53.564, 92.104)
    assert (result.misses, result.non_2xx, result.errors) == (0, 0, 0)
    assert result.problem() is None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("Requests/sec:   1681.38\n", "expected one BENCH_RESULT line, found 0"),
        (WRK_OUTPUT + WRK_OUTPUT, "found 2"),
        (WRK_OUTPUT.replace('"requests": 3403', '"requests": "many"'), "unreadable"),
        (WRK_OUTPUT.replace('"errors": 0, ', ""), "unreadable"),
        (WRK_OUTPUT.replace("Requests/sec:   1681.38\n", ""), "no Requests/sec line"),
        (WRK_OUTPUT.replace("1681.38", "2000.00"), "wrk reports 2000.00 requests/s"),
        (WRK_OUTPUT.replace('"duration_us": 2023936', '"duration_us": 0'), "impossible"),
    ],
)
def test_parse_output_refuses_what_it_cannot_trust(text: str, error: str) -> None:
    with pytest.raises(wrk.WrkError, match=error):
        wrk.parse_output(text)


def test_problem_names_runs_that_measured_errors_not_serving() -> None:
    result = wrk.parse_output(WRK_OUTPUT.replace('"non2xx": 0', '"non2xx": 35'))
    assert result.problem() == "35 of 3403 answers were not 2xx"
    assert wrk.parse_output(WRK_OUTPUT.replace('"non2xx": 0', '"non2xx": 34')).problem() is None
    empty = WRK_OUTPUT.replace('"requests": 3403', '"requests": 0').replace("1681.38", "0.00")
    assert wrk.parse_output(empty).problem() == "wrk completed no request"


def test_wrk_loads_loopback_only(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="loopback"):
        wrk.WrkRun("http://10.0.0.1:8000", tmp_path, threads=1, connections=1, seconds=1)


def test_tables_are_aligned_markdown() -> None:
    table = Table("hits", "target | req/s", [["ours", "3,495"], ["seed-style FastAPI", "864"]])
    assert table.markdown().splitlines() == [
        "| target             | req/s |",
        "| ---                | ---   |",
        "| ours               | 3,495 |",
        "| seed-style FastAPI | 864   |",
    ]


def test_ratios_are_medians_of_per_round_ratios() -> None:
    # Round 2 was noisy for both: its ratio is still 2, and so is the median.
    assert ratio([200, 100, 210], [100, 50, 105]) == "2.00x"
    assert ratio([], []) == "-"
    assert rotated(["a", "b", "c"], 4) == ["b", "c", "a"]


def test_the_report_states_its_goals_above_what_make_bench_rewrites() -> None:
    prose, marker, _ = REPORT.read_text().partition(TABLES_BELOW)
    assert marker and "## Goals" in prose and "## How it is measured" in prose


def test_baselines_run_gthread_and_ours_runs_its_config_as_shipped() -> None:
    assert gunicorn_argv(OURS)[1:] == ["api.wsgi:app"]  # gunicorn.conf.py alone decides
    for baseline in (FLASK_CACHING, FLOOR, FLOOR_GET):
        argv = gunicorn_argv(baseline)
        assert dict(zip(argv[2::2], argv[3::2], strict=True)) == {
            "--worker-class": "gthread",
            "--threads": "8",
            "--keep-alive": "5",
            "--worker-connections": "1000",
        }


def _pipelined_server(sock: socket.socket, statuses: list[int]) -> None:
    """Answer len(statuses) pipelined requests, the answers cut anywhere across writes."""
    received = b""
    while received.count(b"\r\n\r\n") < len(statuses):
        received += sock.recv(1 << 16)
    answers = b"".join(
        f"HTTP/1.1 {status} X\r\nContent-Length: 7\r\nX-Cache: HIT\r\n\r\n{{'a':1}}".encode()
        for status in statuses
    )
    for start in range(0, len(answers), 13):
        sock.sendall(answers[start : start + 13])


@pytest.mark.parametrize(("statuses", "error"), [([200] * 5, None), ([200, 200, 404], "404")])
def test_filling_reads_every_pipelined_answer(statuses: list[int], error: str | None) -> None:
    client, server = socket.socketpair()
    thread = threading.Thread(target=_pipelined_server, args=(server, statuses), daemon=True)
    thread.start()
    target = types.SimpleNamespace(title="stub")
    pairs = [f"P{i}-USD" for i in range(len(statuses))]

    async def fill() -> None:
        reader, writer = await asyncio.open_connection(sock=client)
        try:
            await ask(target, reader, writer, pairs)  # type: ignore[arg-type]
        finally:
            writer.close()

    try:
        if error is None:
            asyncio.run(fill())
        else:
            with pytest.raises(Broken, match=error):
                asyncio.run(fill())
    finally:
        thread.join(5)
        server.close()


def test_targets_inherit_none_of_the_drivers_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "WARNING")  # would turn ours' access log off
    monkeypatch.setenv("NEAR_CACHE_SECONDS", "0")
    monkeypatch.setenv("API_WORKERS", "7")
    monkeypatch.setenv("HOME", "/home/bench")
    env = base_env("run-1", PAIRS="ETH-EUR")
    assert "LOG_LEVEL" not in env and "NEAR_CACHE_SECONDS" not in env
    assert "API_WORKERS" not in env
    assert env["HOME"] == "/home/bench"  # anything not ours passes
    assert env["PAIRS"] == "ETH-EUR"  # what the driver sets on purpose wins


class _StubAPI(http.server.BaseHTTPRequestHandler):
    """Answers like our API: a JSON body, every third answer a MISS."""

    protocol_version = "HTTP/1.1"  # keep-alive, as wrk expects
    # Headers and body go out in two writes: without this, each answer waits for the
    # client's delayed ACK (40 ms), and a second of wrk sees a couple of dozen.
    disable_nagle_algorithm = True
    served = 0
    paths: ClassVar[list[str]] = []  # every path asked, in order

    def do_GET(self) -> None:  # the name http.server calls
        type(self).served += 1
        self.paths.append(self.path)
        body = b'{"pair":"ETH-EUR"}'
        self.send_response(200 if self.path.startswith("/predict/") else 404)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Cache", "MISS" if self.served % 3 == 0 else "HIT")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


class _StubServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # wrk resets its connections when its time is up: nothing to report


@pytest.fixture
def stub_api() -> Iterator[str]:
    server = _StubServer(("127.0.0.1", 0), _StubAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
def test_spread_lua_counts_misses_through_real_wrk(stub_api: str, tmp_path: Path) -> None:
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("ETH-EUR\nBTC-EUR\n")
    _StubAPI.served = 0
    result = wrk.WrkRun(stub_api, pairs, threads=1, connections=1, seconds=1).result()
    assert result.requests > 10
    assert result.non_2xx == 0  # every request went to /predict/<pair>
    # Every third answer said MISS (the stub may have answered one more than wrk counted).
    assert abs(result.misses - result.requests // 3) <= 1


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
@pytest.mark.parametrize("random_pairs", [False, True])
def test_spread_lua_asks_pairs_in_turn_or_at_random(
    stub_api: str, tmp_path: Path, random_pairs: bool
) -> None:
    pairs = [f"P{i}-USD" for i in range(50)]
    (tmp_path / "pairs.txt").write_text("\n".join(pairs) + "\n")
    _StubAPI.paths = []
    wrk.WrkRun(stub_api, tmp_path / "pairs.txt", 1, 1, 1, random_pairs=random_pairs).result()
    asked = [path.removeprefix("/predict/") for path in _StubAPI.paths]
    assert len(asked) > 100
    assert set(asked) == set(pairs)  # every pair asked, and nothing else
    steps = [(pairs.index(b) - pairs.index(a)) % len(pairs) for a, b in itertools.pairwise(asked)]
    in_turn = sum(step == 1 for step in steps)
    if random_pairs:
        assert in_turn < len(steps) / 5  # by chance, one step in 50
    else:
        assert in_turn == len(steps)


def test_the_workers_refresh_counters_are_read_from_its_exposition() -> None:
    text = """# HELP prediction_refreshed_pairs_total Pairs handled by the worker's refreshes.
# TYPE prediction_refreshed_pairs_total counter
prediction_refreshed_pairs_total{result="written"} 1000.0
prediction_refreshed_pairs_total{result="skipped"} 0.0
prediction_refresh_duration_seconds_count 10.0
prediction_requests_total{outcome="hit"} 5.0
"""
    assert refresh_samples(text) == {
        'prediction_refreshed_pairs_total{result="written"}': 1000.0,
        'prediction_refreshed_pairs_total{result="skipped"}': 0.0,
        "prediction_refresh_duration_seconds_count": 10.0,
    }
