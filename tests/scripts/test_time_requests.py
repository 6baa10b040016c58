"""scripts/time_requests.py and latency_plot.py: arithmetic, drawing, and a stub API."""

from __future__ import annotations

import http.server
import importlib.util
import json
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
SCRIPT = SCRIPTS / "time_requests.py"
LINE = re.compile(r"Time taken: (\d+\.\d\d)ms  (.+)")


def _labels(lines: list[str]) -> list[str]:
    """What follows the time on each "Time taken" line; a line of another shape as it is."""
    return [m.group(2) if (m := LINE.fullmatch(line)) else line for line in lines]


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses resolves the module by name while it builds the classes, and the script
    # imports latency_plot by name, as its neighbour on sys.path when run as a script.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


plot = _load("latency_plot")
tr = _load("time_requests")
Kind, Result, Series = tr.Kind, tr.Result, plot.Series


# --- percentiles and the summary -------------------------------------------------------


def test_percentile_of_nothing_is_none() -> None:
    assert tr.percentile([], 50) is None


@pytest.mark.parametrize("p", [0, 1, 50, 99, 100])
def test_percentile_of_one_value_is_that_value(p: float) -> None:
    assert tr.percentile([4.2], p) == 4.2


@pytest.mark.parametrize(
    ("p", "expected"),
    [
        (0, 1),
        (10, 1),
        (11, 2),
        (50, 5),  # linear interpolation would say 5.5
        (90, 9),
        (99, 10),
        (100, 10),
    ],
)
def test_percentile_is_nearest_rank(p: float, expected: float) -> None:
    assert tr.percentile([7, 3, 10, 1, 9, 2, 8, 4, 6, 5], p) == expected


def test_percentile_ranks_are_not_pushed_up_by_float_error() -> None:
    values = [float(v) for v in range(1, 101)]
    # 0.07 * 100 == 7.000000000000001: a rank computed that way would be 8.
    assert tr.percentile(values, 7) == 7.0
    assert tr.percentile(values, 99) == 99.0  # the second slowest, not the slowest
    assert tr.percentile(values, 100) == 100.0


def test_percentile_leaves_its_input_alone() -> None:
    values = [3.0, 1.0, 2.0]
    tr.percentile(values, 50)
    assert values == [3.0, 1.0, 2.0]


@pytest.mark.parametrize("p", [-1, 100.5])
def test_percentile_out_of_range_is_refused(p: float) -> None:
    with pytest.raises(ValueError, match="0..100"):
        tr.percentile([1.0], p)


def test_summarize_sorts_hits_misses_and_errors() -> None:
    summary = tr.summarize(
        [
            Result(Kind.MISS, 1000.0),
            Result(Kind.HIT, 2.0),
            Result(Kind.ERROR, 3.1, "503 cache_unavailable"),
            Result(Kind.HIT, 1.0),
            Result(Kind.FAILED, None, "connection lost"),
            Result(Kind.HIT, 100.0),
            Result(Kind.MISS, 3000.0),
            Result(Kind.MISS, 1000.0),
        ]
    )
    assert summary.requests == 8
    assert summary.hits == (2.0, 1.0, 100.0)
    assert summary.misses == (1000.0, 3000.0, 1000.0)
    assert (summary.errors, summary.unanswered) == (2, 1)
    # Errors served no prediction, so they are not in the ratio: 3 hits of 6 predictions.
    assert summary.hit_ratio == 0.5
    # Median miss 1000 over median hit 2 (nearest-rank p50 of 1, 2, 100), not the mean.
    assert summary.speed_up == 500.0


@pytest.mark.parametrize(
    "results",
    [
        [],
        [Result(Kind.HIT, 1.0)],
        [Result(Kind.MISS, 1.0)],
        [Result(Kind.HIT, 0.0), Result(Kind.MISS, 1.0)],  # no division by zero
    ],
)
def test_speed_up_needs_a_hit_and_a_miss(results: list[object]) -> None:
    assert tr.summarize(results).speed_up is None


def test_format_summary_prints_numbers_and_na() -> None:
    summary = tr.summarize(
        [Result(Kind.HIT, 0.5, server_ms=0.1), Result(Kind.HIT, 1.25), Result(Kind.ERROR, 2)]
    )
    text = tr.format_summary(summary, "http://h/predict/ETH-EUR", connections=1)
    assert text.splitlines() == [
        "--- 3 requests to http://h/predict/ETH-EUR over 1 connection",
        "hit ratio: 100.0% (2 of 2 predictions)   errors: 1 (0 without an answer)",
        "ms                   n       p50       p90       p99       max"
        "   (nearest-rank percentiles)",
        "hits                 2      0.50      1.25      1.25      1.25",
        "misses               0       n/a       n/a       n/a       n/a",
        "hits, in the API     1      0.10      0.10      0.10      0.10",
        "speed-up of hits (median miss / median hit): n/a",
    ]


def test_format_summary_of_nothing() -> None:
    text = tr.format_summary(tr.summarize([]), "http://h/predict/X", connections=0)
    assert "--- 0 requests to http://h/predict/X over 0 connections" in text
    assert "hit ratio: n/a (0 of 0 predictions)" in text


@pytest.mark.parametrize(
    ("result", "line"),
    [
        (Result(Kind.HIT, 0.4249), "Time taken: 0.42ms  HIT"),
        (Result(Kind.MISS, 1014.666), "Time taken: 1014.67ms  MISS"),
        (Result(Kind.HIT, 2.5, server_ms=0.123), "Time taken: 2.50ms  HIT  (in the API: 0.12ms)"),
        (
            Result(Kind.ERROR, 3.1, "503 cache_unavailable"),
            "Time taken: 3.10ms  503 cache_unavailable",
        ),
        (Result(Kind.FAILED, None, "no answer within 5 s"), "No answer: no answer within 5 s"),
    ],
)
def test_format_result(result: object, line: str) -> None:
    assert tr.format_result(result) == line


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"error": {"status": 503, "code": "cache_unavailable", "message": "x"}}',
            "503 cache_unavailable",
        ),
        (b"<html>Bad Gateway</html>", "503 Service Unavailable"),
        (b'{"error": "flat"}', "503 Service Unavailable"),
        (b"[1]", "503 Service Unavailable"),
        (b"\xff", "503 Service Unavailable"),
    ],
)
def test_describe_answer(body: bytes, expected: str) -> None:
    assert tr.describe_answer(503, "Service Unavailable", body) == expected


def test_arguments_have_the_documented_defaults_and_bounds() -> None:
    args = tr.parse_args([])
    assert (args.url, args.pair, args.count, args.interval, args.timeout) == (
        "http://127.0.0.1:8000",
        "ETH-EUR",
        100,
        1.0,
        15.0,
    )
    assert tr.parse_args(["--interval", "0"]).interval == 0.0
    for bad in (["--count", "0"], ["--interval", "-1"], ["--timeout", "0"], ["--url", "ftp://h"]):
        with pytest.raises(SystemExit):
            tr.parse_args(bad)


# --- STALE, and classifying an answer -----------------------------------------------------


@pytest.mark.parametrize(
    ("status", "x_cache", "body", "expected"),
    [
        (200, "HIT", b"{}", Result(Kind.HIT, 2.0, server_ms=0.5)),
        (200, "MISS", b"{}", Result(Kind.MISS, 2.0, server_ms=0.5)),
        (
            200,
            "STALE",
            b'{"pair": "ETH-EUR", "stale": true}',
            Result(Kind.STALE, 2.0, server_ms=0.5),
        ),
        (200, " stale ", b"{}", Result(Kind.STALE, 2.0, server_ms=0.5)),
        (200, "EXPIRED", b"{}", Result(Kind.ERROR, 2.0, "200 but X-Cache is EXPIRED")),
        (200, None, b"{}", Result(Kind.ERROR, 2.0, "200 but X-Cache is missing")),
        (
            503,
            None,
            b'{"error": {"status": 503, "code": "cache_unavailable", "message": "x"}}',
            Result(Kind.ERROR, 2.0, "503 cache_unavailable"),
        ),
    ],
)
def test_classify_reads_the_kind_from_x_cache(
    status: int, x_cache: str | None, body: bytes, expected: object
) -> None:
    reason = "OK" if status == 200 else "Service Unavailable"
    assert tr.classify(2.0, status, reason, x_cache, body, 0.5 if status == 200 else None) == (
        expected
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("cache;dur=0.512", 0.512),
        ('cache;desc="redis";dur="1.5", db;dur=9', 1.5),
        ("cache", None),
        ("cache;dur=fast", None),
        (None, None),
    ],
)
def test_server_duration_is_the_first_dur(header: str | None, expected: float | None) -> None:
    assert tr.server_duration(header) == expected


def test_stale_answers_are_predictions_counted_apart() -> None:
    summary = tr.summarize(
        [
            Result(Kind.HIT, 1.0),
            Result(Kind.STALE, 0.75),
            Result(Kind.STALE, 0.5),
            Result(Kind.MISS, 1000.0),
            Result(Kind.ERROR, 3.0, "503 cache_unavailable"),
        ]
    )
    assert (summary.hits, summary.stale, summary.misses) == ((1.0,), (0.75, 0.5), (1000.0,))
    assert summary.predictions == 4
    assert summary.hit_ratio == 0.25  # a stale answer is served, but it is not a hit
    text = tr.format_summary(summary, "http://h/predict/ETH-EUR", connections=1)
    assert text.splitlines()[1:6] == [
        "hit ratio: 25.0% (1 of 4 predictions, 2 stale)   errors: 1 (0 without an answer)",
        "ms                   n       p50       p90       p99       max"
        "   (nearest-rank percentiles)",
        "hits                 1      1.00      1.00      1.00      1.00",
        "stale                2      0.50      0.75      0.75      0.75",
        "misses               1   1000.00   1000.00   1000.00   1000.00",
    ]


def test_format_result_of_a_stale_answer() -> None:
    line = tr.format_result(Result(Kind.STALE, 0.456, server_ms=0.2))
    assert line == "Time taken: 0.46ms  STALE  (in the API: 0.20ms)"


# --- the latency histogram ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("ms", "low", "high"),
    [
        (0.3, 0.2, 0.5),
        (0.5, 0.5, 1),
        (0.999, 0.5, 1),
        (1, 1, 2),
        (1.999, 1, 2),
        (2, 2, 5),
        (4.99, 2, 5),
        (5, 5, 10),
        (10, 10, 20),
        (999.9, 500, 1000),
        (1000, 1000, 2000),
        (1032.42, 1000, 2000),
        (15000, 10000, 20000),
        (0.0, 0.001, 0.002),  # a coarse clock's zero: drawn with the fastest
    ],
)
def test_buckets_are_1_2_5_steps_per_decade(ms: float, low: float, high: float) -> None:
    index = plot.bucket_of(ms)
    assert (plot.bucket_edge(index), plot.bucket_edge(index + 1)) == (low, high)


@given(st.floats(min_value=plot.SMALLEST_MS, max_value=1e7))
def test_every_latency_falls_within_its_bucket(ms: float) -> None:
    index = plot.bucket_of(ms)
    assert plot.bucket_edge(index) <= ms < plot.bucket_edge(index + 1)


def test_bucket_labels_are_their_edges() -> None:
    assert [plot.bucket_label(i) for i in (-2, -1, 0, 1, 2, 9)] == [
        "0.2-0.5",
        "0.5-1",
        "1-2",
        "2-5",
        "5-10",
        "1000-2000",
    ]


WARM = Series(
    "warm",
    (("HIT", 0.5), ("HIT", 0.7), ("HIT", 0.9), ("STALE", 0.6), ("HIT", 1.5), ("MISS", 1200.0)),
)
COLD = Series("cold", (("MISS", 1100.0), ("MISS", 1500.0), ("HIT", 0.8), ("ERROR", 3.0)))


def test_histogram_of_two_runs_side_by_side() -> None:
    # Bars are shares of each run's answers, the largest (4 of 6) filling 21 characters.
    assert plot.render_histogram([WARM, COLD], width=60).splitlines() == [
        "       ms  warm: 6 answers          cold: 4 answers",
        "    0.5-1  HHHHHHHHHHHHHHHHSSSSS 4  HHHHHHHH 1",
        "      1-2  HHHHH 1",
        "      2-5                           EEEEEEEE 1",
        "     5-10",
        "    10-20",
        "    20-50",
        "   50-100",
        "  100-200",
        "  200-500",
        " 500-1000",
        "1000-2000  MMMMM 1                  MMMMMMMMMMMMMMMM 2",
        plot.LEGEND,
    ]


def test_histogram_shows_every_kind_however_rare_and_fits_its_width() -> None:
    run = Series("busy", (("HIT", 1.0),) * 998 + (("STALE", 1.0), ("MISS", 1000.0)))
    lines = plot.render_histogram([run, WARM, COLD], width=100).splitlines()
    assert all(len(line) <= 100 for line in lines)
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert re.match(r" +1-2  H+S 999  ", rows["1-2"])  # the one stale answer still shows
    assert re.match(r"1000-2000  M 1  ", rows["1000-2000"])


def test_a_header_too_wide_shortens_the_label_and_keeps_the_count() -> None:
    runs = [Series("with-precompute", WARM.samples), Series("without-precompute", COLD.samples)]
    header = plot.render_histogram(runs, width=50).splitlines()[0]
    # Columns of 18 characters: a 16-character bar, a space, a one-digit count.
    assert header == "       ms  with-precomp.. (6)  without-prec.. (4)"


def test_histogram_of_nothing_says_so() -> None:
    assert plot.render_histogram([Series("empty", ())]) == "latency histogram: no answers to draw"


# --- saving and comparing runs -----------------------------------------------------------

RUN = tr.Run(
    "ignored",
    "http://127.0.0.1:8000/predict/ETH-EUR",
    2,
    (
        Result(Kind.MISS, 1032.4217, server_ms=1025.54),
        Result(Kind.HIT, 2.19),
        Result(Kind.STALE, 0.51, server_ms=0.2),
        Result(Kind.ERROR, 3.1, "503 cache_unavailable"),
        Result(Kind.FAILED, None, "no answer within 15 s"),
    ),
)


def test_a_saved_run_reads_back_the_same_labelled_by_its_file(tmp_path: Path) -> None:
    path = tmp_path / "with-precompute.json"
    tr.save_run(RUN, path)
    assert tr.load_run(path) == tr.Run("with-precompute", RUN.target, 2, RUN.results)
    assert tr.load_run(path, "other").label == "other"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "Expecting value"),
        ('{"version": 2, "target": "t", "connections": 1, "results": []}', "not a run"),
        ('{"version": 1, "target": "t", "connections": 1}', "no results"),
        ('{"version": 1, "connections": 1, "results": []}', "no target"),
        ('{"version": 1, "target": "t", "connections": 1, "results": [{"kind": "HOT", "ms": 1}]}',
         "kind is 'HOT'"),
        ('{"version": 1, "target": "t", "connections": 1, "results": [{"kind": "HIT"}]}',
         "a HIT result without ms"),
        ('{"version": 1, "target": "t", "connections": 1, "results": [{"kind": "HIT", "ms": -1}]}',
         "ms is -1"),
        ('{"version": 1, "target": "t", "connections": 1, "results": [1]}', "not an object"),
    ],
)  # fmt: skip
def test_a_file_that_is_not_a_saved_run_is_refused(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "run.json"
    path.write_text(text)
    with pytest.raises(tr.RunFileError, match=f"cannot read {re.escape(str(path))}: .*{reason}"):
        tr.load_run(path)


def test_compare_prints_each_saved_run_and_their_histogram(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tr.save_run(RUN, tmp_path / "warm.json")
    tr.save_run(
        tr.Run("", "http://h/predict/X", 1, (Result(Kind.MISS, 999.0),)), tmp_path / "cold.json"
    )

    status = tr.main(
        ["--compare", str(tmp_path / "warm.json"), str(tmp_path / "cold.json"), "--histogram"]
    )

    out = capsys.readouterr().out.splitlines()
    assert status == 0
    assert out[0] == "=== warm"
    assert out[1] == f"--- 5 requests to {RUN.target} over 2 connections"
    assert "=== cold" in out
    assert out[out.index("=== cold") + 1] == "--- 1 request to http://h/predict/X over 1 connection"
    header = out[out.index(plot.LEGEND) - 12]  # 0.5-1 up to 1000-2000: a header, 11 rows
    assert re.fullmatch(r" +ms  warm: 4 answers +cold: 1 answer", header)


def test_compare_labels_runs_of_the_same_name_by_their_path(tmp_path: Path) -> None:
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        tr.save_run(RUN, tmp_path / name / "run.json")
    args = tr.parse_args(["--compare", str(tmp_path / "a/run.json"), str(tmp_path / "b/run.json")])
    assert [run.label for run in args.runs] == [
        str(tmp_path / "a/run.json"),
        str(tmp_path / "b/run.json"),
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--count", "5"], "--compare sends no requests: leave out --count"),
        (["--url", "http://h:1", "--pair", "BTC-EUR"], "leave out --url, --pair"),
        (["--save", "x.json"], "argument --compare: not allowed with argument --save"),
    ],
)
def test_compare_refuses_what_only_a_new_run_means(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    tr.save_run(RUN, tmp_path / "run.json")
    with pytest.raises(SystemExit) as exit:
        tr.parse_args([*args, "--compare", str(tmp_path / "run.json")])
    assert exit.value.code == 2
    assert message in capsys.readouterr().err


def test_a_file_to_write_needs_an_existing_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for option in ("--save", "--plot"):
        with pytest.raises(SystemExit):
            tr.parse_args([option, str(tmp_path / "missing" / "out")])
        assert f"argument {option}: no directory" in capsys.readouterr().err


# --- the PNG -----------------------------------------------------------------------------

INSTALL_HINT = "-m pip install -e '.[bench]'"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    return width, height


def test_plot_draws_a_png_or_says_how_to_install_matplotlib(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Never skipped: CI installs only the dev extra, without matplotlib; bench has it."""
    tr.save_run(RUN, tmp_path / "warm.json")
    png = tmp_path / "latency.png"
    argv = [
        "--compare",
        str(tmp_path / "warm.json"),
        str(tmp_path / "warm.json"),
        "--plot",
        str(png),
    ]

    if importlib.util.find_spec("matplotlib") is None:
        with pytest.raises(SystemExit) as exit:
            tr.main(argv)
        assert exit.value.code == 2
        assert INSTALL_HINT in capsys.readouterr().err
        assert not png.exists()
    else:
        assert tr.main(argv) == 0
        assert capsys.readouterr().out.splitlines()[-1] == f"latency plot: {png}"
        assert _png_size(png) == (900, 580)  # 9 x (1 + 2.4 per run) inches at 100 dpi


def test_plot_without_matplotlib_stops_before_any_request(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name in ("matplotlib", "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, name, None)  # "import matplotlib" now fails
    with pytest.raises(SystemExit) as exit:
        # Port 1: were a request sent, it would be refused and exit 1, not 2.
        tr.main(["--url", "http://127.0.0.1:1", "--plot", str(tmp_path / "out.png")])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert "--plot draws with matplotlib, which is not installed" in err
    assert f"{sys.executable} {INSTALL_HINT}" in err
    assert "--histogram, which needs nothing" in err


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
        if answer == "MISS":
            self.server.release.wait(0.05)  # a miss computes; 50 ms is plenty slower
        if answer == "503":
            status, headers = 503, {"Retry-After": "1"}
            error = {"status": 503, "code": "cache_unavailable", "message": "down"}
            body: dict[str, object] = {"error": error}
        else:
            status, headers = 200, {"X-Cache": answer}
            body = {"pair": "ETH-EUR", "predicted_price": 2000.5, "model_version": "stub"}
            if answer == "STALE":
                body["stale"] = True
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        if self.server.drop_connections:
            # Closed without a "Connection: close" header, as an idle keepalive timeout does.
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output to the test's own


class StubServer(http.server.ThreadingHTTPServer):
    def __init__(self, answers: list[str], drop_connections: bool = False) -> None:
        super().__init__(("127.0.0.1", 0), StubAPI)
        self.answers = iter(answers)
        self.drop_connections = drop_connections
        self.release = threading.Event()
        self.seen: list[tuple[int, str, str]] = []  # client port, HTTP version, path
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def record(self, request: StubAPI) -> str:
        with self._lock:
            self.seen.append((request.client_address[1], request.request_version, request.path))
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
    server = stub_api(["MISS", "HIT", "503", "HIT", "MISS"])
    out = run_script("--count", "5", "--interval", "0", "--url", server.url)

    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    lines = out.stdout.splitlines()
    assert _labels(lines[:5]) == ["MISS", "HIT", "503 cache_unavailable", "HIT", "MISS"]
    times: dict[str, list[str]] = {"HIT": [], "MISS": []}
    for match in map(LINE.fullmatch, lines[:5]):
        if match and match.group(2) in times:
            times[match.group(2)].append(match.group(1))

    target = f"{server.url}/predict/ETH-EUR"
    assert lines[5] == f"--- 5 requests to {target} over 1 connection"
    assert lines[6] == "hit ratio: 50.0% (2 of 4 predictions)   errors: 1 (0 without an answer)"
    # Nearest-rank of two values: p50 is the faster one; p90, p99 and max the slower one.
    for row, label, kind in ((lines[8], "hits", "HIT"), (lines[9], "misses", "MISS")):
        fast, slow = sorted(times[kind], key=float)
        assert row.split() == [label, "2", fast, slow, slow, slow]
    hit_p50, miss_p50 = float(lines[8].split()[2]), float(lines[9].split()[2])
    assert miss_p50 >= 50  # the stub takes 50 ms to "compute"
    speed_up = re.fullmatch(r"speed-up of hits \(median miss / median hit\): (\d+\.\d)x", lines[10])
    assert speed_up
    # The ratio of the two p50s, as far as their rounding to 0.01 ms lets us tell.
    low, high = (miss_p50 - 0.005) / (hit_p50 + 0.005), (miss_p50 + 0.005) / (hit_p50 - 0.005)
    assert low - 0.05 <= float(speed_up.group(1)) <= high + 0.05

    # One TCP connection (one client port) carried all five HTTP/1.1 requests.
    assert len(server.seen) == 5
    assert {port for port, _, _ in server.seen} == {server.seen[0][0]}
    assert {(version, path) for _, version, path in server.seen} == {
        ("HTTP/1.1", "/predict/ETH-EUR")
    }


def test_reconnects_when_the_server_drops_the_idle_connection(
    stub_api: Callable[..., StubServer],
) -> None:
    server = stub_api(["HIT", "HIT", "HIT"], drop_connections=True)
    out = run_script("--count", "3", "--interval", "0", "--url", server.url)

    assert out.returncode == 0, out.stdout + out.stderr
    assert _labels(out.stdout.splitlines()[:3]) == ["HIT", "HIT", "HIT"]
    assert "over 3 connections" in out.stdout
    assert "errors: 0" in out.stdout
    assert len({port for port, _, _ in server.seen}) == 3


def test_a_timed_out_request_is_an_error_and_its_late_answer_is_not_misread(
    stub_api: Callable[..., StubServer],
) -> None:
    server = stub_api(["SLOW", "MISS", "HIT"])
    out = run_script("--count", "3", "--interval", "0", "--timeout", "0.3", "--url", server.url)

    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "No answer: no answer within 0.3 s"
    assert _labels(lines[1:3]) == ["MISS", "HIT"]
    assert "errors: 1 (1 without an answer)" in out.stdout
    assert "over 2 connections" in out.stdout


def test_only_errors_exit_1(stub_api: Callable[..., StubServer]) -> None:
    server = stub_api(["503", "503"])
    out = run_script("--count", "2", "--interval", "0", "--url", server.url)

    assert out.returncode == 1
    assert out.stdout.splitlines()[0].endswith("ms  503 cache_unavailable")
    assert "every request failed" in out.stderr
    assert "Traceback" not in out.stderr


def test_nothing_listening_exits_1_with_a_clear_message() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago, so likely still is
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = run_script("--count", "3", "--interval", "0", "--url", f"http://127.0.0.1:{port}")

    assert out.returncode == 1
    assert out.stderr == (
        f"no answer from http://127.0.0.1:{port}: is the API running? (make run)\n"
    )
    # It gives up after the first refusal instead of trying the other two.
    (line,) = out.stdout.splitlines()
    assert re.fullmatch(rf"No answer: cannot connect to 127\.0\.0\.1:{port}: .*refused", line)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
@pytest.mark.timeout(20)
def test_ctrl_c_prints_the_summary_so_far_and_exits_130(
    stub_api: Callable[..., StubServer],
) -> None:
    server = stub_api(["HIT"])
    # Run through a shim that restores Python's SIGINT handler, which a parent that ignores
    # SIGINT (a background job, some CI runners) would otherwise pass on as ignored. It puts
    # the script's directory first on sys.path, as `python scripts/time_requests.py` does.
    shim = (
        "import os, runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler);"
        "sys.argv = sys.argv[1:]; sys.path.insert(0, os.path.dirname(sys.argv[0]));"
        "runpy.run_path(sys.argv[0], run_name='__main__')"
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
    assert "--- 1 request to" in stdout
    assert "hit ratio: 100.0% (1 of 1 predictions)" in stdout


def test_a_run_with_stale_answers_saved_and_compared(
    stub_api: Callable[..., StubServer], tmp_path: Path
) -> None:
    server = stub_api(["MISS", "HIT", "STALE", "HIT"])
    saved = tmp_path / "degraded.json"
    out = run_script(
        "--count", "4", "--interval", "0", "--url", server.url, "--histogram", "--save", str(saved)
    )

    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert _labels(lines[:4]) == ["MISS", "HIT", "STALE", "HIT"]
    assert (
        lines[5]
        == "hit ratio: 50.0% (2 of 4 predictions, 1 stale)   errors: 0 (0 without an answer)"
    )
    assert [line.split()[:2] for line in lines[7:10]] == [
        ["hits", "2"],
        ["stale", "1"],
        ["misses", "1"],
    ]
    assert lines[11] == f"saved: {saved} (--compare it with another run)"
    assert re.fullmatch(r" +ms  degraded: 4 answers", lines[13])
    assert lines[-1] == plot.LEGEND

    again = run_script("--compare", str(saved))
    assert again.returncode == 0, again.stderr
    # The same summary as the run printed, read back from the file.
    assert again.stdout.splitlines()[1:8] == lines[4:11]
