"""The benchmark's machinery (scripts/bench/): reading wrk, judging, reporting.

Nothing here starts a server or loads anything heavy; the one test that runs wrk does
so for a second against a stub on loopback, and is skipped where wrk is not installed.
"""

from __future__ import annotations

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
from scripts.bench.judge import FALL_SHORT, GOALS, NOT_MEASURED, PASS, judge, median_ratio
from scripts.bench.report import GUNICORN_BASELINES, render_markdown, render_text
from scripts.bench.results import (
    FLASK_CACHING,
    FLOOR,
    FLOOR_GET,
    OURS,
    SEED,
    HitRun,
    Results,
    ScalePoint,
    SteadyRun,
)
from scripts.bench.scaling import _walk_pipelined
from scripts.bench.targets import StartFailed, base_env, expected_worker, gunicorn_argv

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
"connect_errors": 0, "read_errors": 0, "write_errors": 0, "timeouts": 0, "latency_us": \
{"p50": 16970, "p90": 53564, "p99": 92104, "max": 132723, "mean": 23025.5}}
"""


def test_parse_output_reads_the_scripts_line() -> None:
    result = wrk.parse_output(WRK_OUTPUT)
    assert result.requests == 3403
    assert result.rps == pytest.approx(1681.38, abs=0.01)
    assert (result.p50_ms, result.p90_ms, result.p99_ms) == (16.97, 53.564, 92.104)
    assert result.max_ms == 132.723
    assert (result.misses, result.non_2xx, result.socket_errors, result.timeouts) == (0, 0, 0, 0)
    assert result.problem() is None


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("Requests/sec:   1681.38\n", "expected one BENCH_RESULT line, found 0"),
        (WRK_OUTPUT + WRK_OUTPUT, "found 2"),
        (WRK_OUTPUT.replace('"requests": 3403', '"requests": "many"'), "unreadable"),
        (WRK_OUTPUT.replace('"timeouts": 0, ', ""), "unreadable"),
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


def test_command_loads_loopback_only(tmp_path: Path) -> None:
    if shutil.which("wrk") is None:
        pytest.skip("wrk is not installed")
    argv = wrk.command(
        "http://127.0.0.1:8000", tmp_path / "pairs", threads=2, connections=32, seconds=10
    )
    assert argv[1:5] == ["-t2", "-c32", "-d10s", "--timeout=10s"]
    assert argv[-3:] == ["http://127.0.0.1:8000", "--", str(tmp_path / "pairs")]
    at_random = wrk.command(
        "http://127.0.0.1:8000",
        tmp_path / "pairs",
        threads=2,
        connections=32,
        seconds=10,
        random_pairs=True,
    )
    assert at_random[-3:] == ["--", str(tmp_path / "pairs"), "random"]
    with pytest.raises(ValueError, match="loopback"):
        wrk.command("http://10.0.0.1:8000", tmp_path, threads=1, connections=1, seconds=1)


@pytest.mark.parametrize(
    ("key", "value", "status"),
    [
        ("hit_rps_vs_flask_caching", 2.5, PASS),  # at least 2.5x: the limit itself passes
        ("hit_rps_vs_flask_caching", 2.49, FALL_SHORT),
        ("hit_rps_vs_floor", 1.0, PASS),
        ("hit_rps_vs_floor", 0.99, FALL_SHORT),
        ("seq_p50_vs_floor", 1.0, PASS),  # at most the floor's
        ("seq_p50_vs_floor", 1.01, FALL_SHORT),
        ("hit_slowest_round", 0.8, PASS),
        ("hit_slowest_round", 0.79, FALL_SHORT),
        ("hit_rps_10000_random_vs_4", 0.9, PASS),
        ("hit_rps_10000_random_vs_4", 0.89, FALL_SHORT),
        ("steady_waited", 0, PASS),
        ("steady_waited", 1, FALL_SHORT),
        ("api_rss_mib", 79.9, PASS),
        ("refresh_10000_s", 5.2, FALL_SHORT),
        ("refresh_10000_s", None, NOT_MEASURED),
    ],
)
def test_judge(key: str, value: float | None, status: str) -> None:
    verdict = next(v for v in judge({key: value}) if v.goal.key == key)
    assert verdict.status == status
    assert verdict.line().startswith(status)


def test_judge_gives_every_goal_a_verdict_and_refuses_unknown_figures() -> None:
    assert [v.goal.key for v in judge({})] == [goal.key for goal in GOALS]
    assert {v.status for v in judge({})} == {NOT_MEASURED}
    with pytest.raises(KeyError, match="no such goal"):
        judge({"speed": 1.0})


def test_median_ratio_is_taken_round_by_round() -> None:
    # Round 2 was noisy for both: its ratio is still 2, and so is the median.
    assert median_ratio([200, 100, 210], [100, 50, 105]) == 2.0
    assert median_ratio([], []) is None


def _wrk_result(rps: float, p50_ms: float, p99_ms: float = 0.0, misses: int = 0) -> wrk.WrkResult:
    return wrk.WrkResult(
        requests=int(rps * 10),
        seconds=10.0,
        p50_ms=p50_ms,
        p90_ms=p50_ms,
        p99_ms=p99_ms or p50_ms * 2,
        max_ms=p99_ms * 2,
        mean_ms=p50_ms,
        misses=misses,
        non_2xx=0,
        socket_errors=0,
        timeouts=0,
    )


@pytest.fixture
def results() -> Results:
    """Three rounds in which ours serves 2.5x Flask-Caching and 1.05x the floor.

    Round 2 is slow for every target alike (the machine was busy): the ratios do not
    see it, the slowest round does (0.6x the median).
    """
    results = Results(mode="test", targets=[OURS, FLASK_CACHING, SEED, FLOOR], rounds=3)
    for number, noise in enumerate([1.0, 0.6, 1.1]):
        for target, rps, p50 in [
            (OURS, 6300, 0.46),
            (FLASK_CACHING, 2520, 1.2),
            (SEED, 1200, 1.4),
            (FLOOR, 6000, 0.48),
        ]:
            run = _wrk_result(rps * noise, p50 / noise)
            results.hits.append(HitRun(target, number, run, run, [16, 16]))
        results.steady.append(SteadyRun(OURS, number, _wrk_result(5000, 5.0, 12.0), 0, [16, 16]))
    # Round 2 is slow for both APIs: the per-round ratio to the 4-pair API stays 1.08.
    reference = [_wrk_result(2000, p50) for p50 in (0.50, 0.75, 0.50)]
    # Under load, 10,000 pairs at random: 0.9x and 0.95x the 4-pair API, round by round.
    loads = {10_000: ([2700, 1425], [3000, 1500]), 1_000: ([2900], [3000])}
    for pairs, seconds, p50s in [(1, 0.01, ()), (1_000, 0.4, (0.51,)), (10_000, 3.0, (0.54, 0.81))]:
        at_random, of_four = loads.get(pairs, ([], []))
        results.scale.append(
            ScalePoint(
                pairs=pairs,
                refresh_seconds=[seconds],
                redis_used_memory=2_000_000,
                redis_bytes_per_pair=300.0,
                hits=[_wrk_result(2000, p50) for p50 in (*p50s, 0.54)],
                reference_hits=reference[: len(p50s) + 1] if p50s else [],
                hits_on_reference_pairs=reference[: len(p50s) + 1] if p50s else [],
                load=_wrk_result(5000, 5),
                api_rss_mib=[50.0, 51.0],
                pool_rss_mib=[60.0, 61.0],
                random_loads=[_wrk_result(rps, 10.0) for rps in at_random],
                reference_loads=[_wrk_result(rps, 10.0) for rps in of_four],
                warmed_workers=2,
            )
        )
    return results


def test_results_measure_every_goal(results: Results) -> None:
    measured = results.measured()
    assert measured["hit_rps_vs_flask_caching"] == pytest.approx(2.5)
    assert measured["hit_rps_vs_floor"] == pytest.approx(1.05)
    assert measured["seq_p50_vs_floor"] == pytest.approx(0.46 / 0.48)
    assert measured["hit_slowest_round"] == pytest.approx(0.6)
    assert measured["hit_rps_10000_random_vs_4"] == pytest.approx(0.925)
    assert measured["steady_p99_over_p50"] == pytest.approx(2.4)
    assert measured["steady_waited"] == 0
    assert measured["refresh_10000_s"] == 3.0
    assert measured["hit_p50_10000_vs_4"] == pytest.approx(1.08)
    assert results.scale[0].hit_p50_vs_reference is None  # 1 pair: no 4-pair reference
    assert results.scale[2].same_pairs_p50_vs_reference == 1.0
    assert measured["pool_rss_mib"] == 61.0
    verdicts = {v.goal.key: v.status for v in judge(measured)}
    assert verdicts["hit_rps_vs_seed"] == PASS  # 5.25x
    assert verdicts["hit_rps_vs_floor"] == PASS
    assert verdicts["seq_p50_vs_floor"] == PASS
    assert verdicts["hit_slowest_round"] == FALL_SHORT
    assert verdicts["hit_rps_10000_random_vs_4"] == PASS


def test_slowest_round_needs_three_rounds(results: Results) -> None:
    results.hits = [h for h in results.hits if h.round < 2]
    assert results.slowest_round(OURS) is None
    assert results.measured()["hit_slowest_round"] is None
    results.hits = [h for h in results.hits if h.target != OURS]
    assert results.slowest_round(OURS) is None


def test_reports_show_the_verdicts_and_each_round(results: Results) -> None:
    verdicts = judge(results.measured())
    text = render_text(results, verdicts)
    assert "PASS         hit throughput vs Flask-Caching" in text
    assert "FALL SHORT   hit throughput: slowest round vs median round" in text
    assert "16/16; 16/16; 16/16" in text  # the connection split of every round
    assert "6,300 / 3,780 / 6,930" in text  # ours' throughput, round by round
    assert "2,700 / 1,425" in text  # 10,000 pairs at random, each round
    results.settings = {GUNICORN_BASELINES: "worker_class=gthread, threads=8"}
    markdown = render_markdown(results, verdicts, "performance.png")
    assert "| hit throughput vs Flask-Caching | 2.50x | >= 2.50x | PASS |" in markdown
    assert "| hit throughput, 10,000 pairs at random vs 4 pairs | 0.93x | >= 0.90x |" in markdown
    assert "![throughput and latency per target](performance.png)" in markdown
    # The medians, the throughput round by round, then every figure of each round.
    assert markdown.count("| Flask-Caching memoize |") == 5
    assert f"| {GUNICORN_BASELINES} | `worker_class=gthread, threads=8` |" in markdown


def test_baselines_run_gthread_and_ours_runs_its_config_as_shipped() -> None:
    ours = gunicorn_argv(OURS)
    assert ours[1:] == ["api.wsgi:app"]  # gunicorn.conf.py alone decides
    assert expected_worker(OURS) is None
    for baseline in (FLASK_CACHING, FLOOR, FLOOR_GET):
        argv = gunicorn_argv(baseline)
        flags = dict(zip(argv[2::2], argv[3::2], strict=True))
        assert flags == {
            "--worker-class": "gthread",
            "--threads": "8",
            "--keep-alive": "5",
            "--worker-connections": "1000",
        }
        assert expected_worker(baseline) == "gthread"


def test_fill_asks_batches_the_api_accepts() -> None:
    from api.openapi import MAX_BATCH
    from scripts.bench.scaling import FILL_BATCH

    assert 1 < FILL_BATCH <= MAX_BATCH


def _pipelined_server(sock: socket.socket, statuses: list[int]) -> None:
    """Answer len(statuses) pipelined requests, each answer split across writes."""
    received = b""
    while received.count(b"\r\n\r\n") < len(statuses):
        received += sock.recv(1 << 16)
    answers = b"".join(
        f"HTTP/1.1 {status} X\r\nContent-Length: 7\r\nX-Cache: HIT\r\n\r\n{{'a':1}}".encode()
        for status in statuses
    )
    for start in range(0, len(answers), 13):  # odd pieces: heads and bodies cut anywhere
        sock.sendall(answers[start : start + 13])


@pytest.mark.parametrize(("statuses", "error"), [([200] * 5, None), ([200, 200, 404], "b'404'")])
def test_walk_pipelined_reads_every_answer(statuses: list[int], error: str | None) -> None:
    client, server = socket.socketpair()
    target = types.SimpleNamespace(title="stub", port=1)
    thread = threading.Thread(target=_pipelined_server, args=(server, statuses), daemon=True)
    thread.start()
    paths = [f"/predict/P{i}-USD" for i in range(len(statuses))]
    try:
        if error is None:
            _walk_pipelined(target, client, paths)  # type: ignore[arg-type]
        else:
            with pytest.raises(StartFailed, match=error):
                _walk_pipelined(target, client, paths)  # type: ignore[arg-type]
    finally:
        thread.join(5)
        client.close()
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
    result = wrk.run(stub_api, pairs, threads=1, connections=1, seconds=1)
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
    wrk.run(
        stub_api,
        tmp_path / "pairs.txt",
        threads=1,
        connections=1,
        seconds=1,
        random_pairs=random_pairs,
    )
    asked = [path.removeprefix("/predict/") for path in _StubAPI.paths]
    assert len(asked) > 100
    assert set(asked) == set(pairs)  # every pair asked, and nothing else
    steps = [(pairs.index(b) - pairs.index(a)) % len(pairs) for a, b in itertools.pairwise(asked)]
    in_turn = sum(step == 1 for step in steps)
    if random_pairs:
        assert in_turn < len(steps) / 5  # by chance, one step in 50
    else:
        assert in_turn == len(steps)
