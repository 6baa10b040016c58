"""Time GET /predict/<PAIR> against a running API: one line per request, then a summary.

`make requests` runs it (URL=, PAIR=, N=, INTERVAL=). It needs only the standard library,
and sends every request over one keep-alive connection, opened before the clock starts,
so that the times are the API's and not those of TCP set-up:

    Time taken: 1014.67ms  MISS
    Time taken: 0.42ms  HIT
    Time taken: 0.45ms  STALE
    Time taken: 3.10ms  503 cache_unavailable

--histogram prints the latency distribution in the terminal and --plot FILE.png draws it
(matplotlib, the `bench` extra); --save FILE.json keeps a run, and --compare A.json B.json
shows saved runs side by side instead of sending requests: a run with the worker and beat
precomputing against one without, say.

Exit status: 0 if at least one prediction came back (or --compare read its runs), 1 if
none did, 2 for a bad argument or file, 130 on Ctrl-C (after the summary so far).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import http.client
import json
import math
import shlex
import shutil
import sys
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import latency_plot  # scripts/, beside this file: Python puts a script's directory on sys.path

PERCENTILES = (50, 90, 99)
RUN_FILE_VERSION = 1


class Kind(enum.StrEnum):
    HIT = "HIT"  # a prediction served from Redis
    STALE = "STALE"  # one past its freshness, served within the grace period ("stale": true)
    MISS = "MISS"  # a prediction computed for this request
    ERROR = "ERROR"  # an answer, but no prediction: 4xx/5xx, or a 200 without X-Cache
    FAILED = "FAILED"  # no answer at all: refused, reset or timed out


@dataclasses.dataclass(frozen=True, slots=True)
class Result:
    """One request's outcome; ms is None when no answer came back."""

    kind: Kind
    ms: float | None = None
    detail: str = ""
    # What the API says it spent on the answer (its Server-Timing header), if it says.
    server_ms: float | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Summary:
    """What a run measured: hit, stale and miss latencies in ms, and how many failed."""

    requests: int
    hits: tuple[float, ...]
    misses: tuple[float, ...]
    errors: int  # answered without a prediction, or not answered at all
    unanswered: int  # the errors that got no answer at all
    hits_in_api: tuple[float, ...] = ()  # Server-Timing of the hits that sent one
    stale: tuple[float, ...] = ()

    @property
    def predictions(self) -> int:
        """Answers that carried a prediction: hits, stale ones and misses."""
        return len(self.hits) + len(self.stale) + len(self.misses)

    @property
    def hit_ratio(self) -> float | None:
        """Hits over predictions served; errors are left out, as they served nothing."""
        return len(self.hits) / self.predictions if self.predictions else None

    @property
    def speed_up(self) -> float | None:
        """Median miss over median hit, both the p50 printed in the table."""
        hit, miss = percentile(self.hits, 50), percentile(self.misses, 50)
        if hit is None or miss is None or hit <= 0:
            return None
        return miss / hit


def percentile(values: Iterable[float], p: float) -> float | None:
    """The nearest-rank p-th percentile (0 <= p <= 100) of values; None if there are none.

    Nearest-rank (the smallest value with at least p% of all values at or below it) always
    answers a latency that was measured, never one interpolated between two; p99 of 100
    requests is the second slowest.
    """
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0..100, got {p}")
    ordered = sorted(values)
    if not ordered:
        return None
    # p * n / 100 rather than p / 100 * n: for whole percentages the product is exact, so a
    # rank that is a whole number stays one (0.07 * 100 would be 7.000000000000001 -> 8).
    rank = max(1, math.ceil(p * len(ordered) / 100))
    return ordered[rank - 1]


def summarize(results: Iterable[Result]) -> Summary:
    """Sort results into hits, stale answers, misses and errors."""
    results = list(results)
    return Summary(
        requests=len(results),
        hits=tuple(r.ms for r in results if r.kind is Kind.HIT and r.ms is not None),
        stale=tuple(r.ms for r in results if r.kind is Kind.STALE and r.ms is not None),
        misses=tuple(r.ms for r in results if r.kind is Kind.MISS and r.ms is not None),
        errors=sum(r.kind in (Kind.ERROR, Kind.FAILED) for r in results),
        unanswered=sum(r.kind is Kind.FAILED for r in results),
        hits_in_api=tuple(
            r.server_ms for r in results if r.kind is Kind.HIT and r.server_ms is not None
        ),
    )


def format_result(result: Result) -> str:
    """The per-request line: the seed tutorial's format plus the cache status."""
    if result.ms is None:
        return f"No answer: {result.detail}"
    line = f"Time taken: {result.ms:.2f}ms  {result.detail or result.kind}"
    if result.server_ms is not None:
        line += f"  (in the API: {result.server_ms:.2f}ms)"
    return line


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _row(label: str, n: object, cells: Iterable[str]) -> str:
    return f"{label:<16}{n!s:>6}" + "".join(f"{cell:>10}" for cell in cells)


def _latency_row(label: str, values: Sequence[float]) -> str:
    cells = [percentile(values, p) for p in PERCENTILES] + [max(values, default=None)]
    return _row(label, len(values), map(_ms, cells))


def format_summary(summary: Summary, target: str, connections: int) -> str:
    """The summary block printed after the per-request lines.

    Stale answers get a row only when there are any, as the API's own times do: a run
    against a healthy, precomputed cache has none.
    """
    ratio = "n/a" if summary.hit_ratio is None else f"{summary.hit_ratio:.1%}"
    speed_up = "n/a" if summary.speed_up is None else f"{summary.speed_up:.1f}x"
    stale = f", {len(summary.stale)} stale" if summary.stale else ""
    return "\n".join(
        [
            f"--- {_plural(summary.requests, 'request')} to {target}"
            f" over {_plural(connections, 'connection')}",
            f"hit ratio: {ratio} ({len(summary.hits)} of {summary.predictions} predictions"
            f"{stale})   errors: {summary.errors} ({summary.unanswered} without an answer)",
            _row("ms", "n", [*(f"p{p}" for p in PERCENTILES), "max"])
            + "   (nearest-rank percentiles)",
            _latency_row("hits", summary.hits),
            *([_latency_row("stale", summary.stale)] if summary.stale else []),
            _latency_row("misses", summary.misses),
            *(
                [_latency_row("hits, in the API", summary.hits_in_api)]
                if summary.hits_in_api
                else []
            ),
            f"speed-up of hits (median miss / median hit): {speed_up}",
        ]
    )


def describe_answer(status: int, reason: str, body: bytes) -> str:
    """'503 cache_unavailable' from the API's JSON error body, else '502 Bad Gateway'."""
    try:
        code = json.loads(body)["error"]["code"]
    except (ValueError, LookupError, TypeError):  # not the API's error shape (a proxy's page)
        code = None
    return f"{status} {code}" if isinstance(code, str) else f"{status} {reason}".rstrip()


def classify(
    ms: float, status: int, reason: str, x_cache: str | None, body: bytes, server_ms: float | None
) -> Result:
    """An answer's Result: a 200's kind is its X-Cache (HIT, STALE or MISS), else an error."""
    cache = (x_cache or "").strip().upper()
    if status == 200 and cache in (Kind.HIT, Kind.STALE, Kind.MISS):
        return Result(Kind(cache), ms, server_ms=server_ms)
    if status == 200:
        return Result(Kind.ERROR, ms, f"200 but X-Cache is {cache or 'missing'}")
    return Result(Kind.ERROR, ms, describe_answer(status, reason, body))


def server_duration(header: str | None) -> float | None:
    """The first dur= of a Server-Timing header (W3C), in ms; None if there is none."""
    for metric in (header or "").split(","):
        for param in metric.split(";")[1:]:
            name, _, value = param.strip().partition("=")
            if name == "dur":
                try:
                    return float(value.strip('"'))
                except ValueError:
                    return None
    return None


class ConnectFailed(Exception):
    """Nothing answered at the address: refused, unknown host, or connect timed out."""


class Client:
    """GETs over one keep-alive connection, reopened only when it is closed."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        connection_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        self.conn = connection_class(parts.hostname or "", parts.port, timeout=timeout)
        self.timeout = timeout
        self.connections = 0  # how many were opened: 1 when keep-alive holds

    def get(self, path: str) -> Result:
        """GET path, timing the request and the full read of its answer."""
        reused = self.conn.sock is not None
        if not reused:
            self._open()
        try:
            return self._timed_get(path)
        except (ConnectionResetError, BrokenPipeError) as exc:  # includes RemoteDisconnected
            self.conn.close()
            if not reused:
                return Result(Kind.FAILED, detail=f"connection lost: {exc}")
        except TimeoutError:
            # Closed, or its late answer would be read as the next request's.
            self.conn.close()
            return Result(Kind.FAILED, detail=f"no answer within {self.timeout:g} s")
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            return Result(Kind.FAILED, detail=f"{type(exc).__name__}: {exc}")
        # The server closed the idle connection (gunicorn's keepalive is 5 s) just as we sent
        # on it. A GET is safe to repeat: once more, on a fresh connection, timing only that.
        return self.get(path)

    def close(self) -> None:
        self.conn.close()

    def _open(self) -> None:
        # Outside the timed section, so that the first request is timed like every other.
        try:
            self.conn.connect()
        except OSError as exc:
            self.conn.close()
            raise ConnectFailed(
                f"cannot connect to {self.conn.host}:{self.conn.port}: {exc}"
            ) from None
        self.connections += 1

    def _timed_get(self, path: str) -> Result:
        start = time.perf_counter()
        self.conn.request("GET", path, headers={"Accept": "application/json"})
        response = self.conn.getresponse()
        body = response.read()
        ms = (time.perf_counter() - start) * 1000
        return classify(
            ms,
            response.status,
            response.reason,
            response.getheader("X-Cache"),
            body,
            server_duration(response.getheader("Server-Timing")),
        )


def send_requests(
    client: Client, path: str, count: int, interval: float, results: list[Result]
) -> None:
    """Send count requests, appending to results as they come, so Ctrl-C keeps them."""
    next_start = time.monotonic()
    for _ in range(count):
        time.sleep(max(0.0, next_start - time.monotonic()))
        # Start to start: a request slower than the interval delays the next one rather
        # than making the ones after it bunch up to catch up.
        next_start = time.monotonic() + interval
        try:
            result = client.get(path)
        except ConnectFailed as exc:
            result = Result(Kind.FAILED, detail=str(exc))
        results.append(result)
        print(format_result(result), flush=True)
        if client.connections == 0:
            # Never reached the server: a hundred more refusals would tell nothing new.
            return


@dataclasses.dataclass(frozen=True, slots=True)
class Run:
    """A run's label, where its requests went, and their results: what --save writes."""

    label: str
    target: str
    connections: int
    results: tuple[Result, ...]


class RunFileError(Exception):
    """A --compare file that is not a run saved by --save."""


def save_run(run: Run, path: Path) -> None:
    """Write run to path as JSON; its label is the file's name, so it is not stored."""
    results = [
        {"kind": r.kind.value}
        | ({} if r.ms is None else {"ms": r.ms})
        | ({"detail": r.detail} if r.detail else {})
        | ({} if r.server_ms is None else {"server_ms": r.server_ms})
        for r in run.results
    ]
    data = {
        "saved_by": "scripts/time_requests.py",
        "version": RUN_FILE_VERSION,
        "target": run.target,
        "connections": run.connections,
        "results": results,
    }
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _optional_ms(value: object, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ValueError(f"{name} is {value!r}, not a number of ms")
    return float(value)


def _result_from(item: Any) -> Result:
    if not isinstance(item, dict):
        raise ValueError(f"a result is {item!r}, not an object")
    try:
        kind = Kind(item["kind"])
    except (KeyError, ValueError):
        raise ValueError(f"kind is {item.get('kind')!r}, not one of {', '.join(Kind)}") from None
    ms = _optional_ms(item.get("ms"), "ms")
    detail = item.get("detail", "")
    if not isinstance(detail, str):
        raise ValueError(f"detail is {detail!r}, not a string")
    if (ms is None) != (kind is Kind.FAILED):  # only a request without an answer has no time
        raise ValueError(f"a {kind} result {'with' if ms is not None else 'without'} ms")
    return Result(kind, ms, detail, _optional_ms(item.get("server_ms"), "server_ms"))


def load_run(path: Path, label: str | None = None) -> Run:
    """The run saved at path, labelled with the file's name unless label says otherwise."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("version") != RUN_FILE_VERSION:
            raise ValueError(f"not a run saved by --save (version {RUN_FILE_VERSION})")
        target, connections = data.get("target"), data.get("connections")
        if not isinstance(target, str) or not isinstance(connections, int):
            raise ValueError("no target or connections")
        if not isinstance(data.get("results"), list):
            raise ValueError("no results")
        results = tuple(_result_from(item) for item in data["results"])
    except (OSError, ValueError) as exc:  # JSON and Unicode errors are ValueErrors
        raise RunFileError(f"cannot read {path}: {exc}") from None
    return Run(label or path.stem, target, connections, results)


def _series(run: Run) -> latency_plot.Series:
    samples = tuple((r.kind, r.ms) for r in run.results if r.ms is not None)
    return latency_plot.Series(run.label, samples)


def show_distribution(runs: Sequence[Run], histogram: bool, plot: Path | None) -> None:
    """The latency histogram in the terminal (--histogram), and the PNG (--plot)."""
    series = [_series(run) for run in runs]
    if histogram:
        width = min(shutil.get_terminal_size((80, 24)).columns, 120)
        print(f"\n{latency_plot.render_histogram(series, width)}")
    if plot is not None:
        latency_plot.draw_png(series, plot)
        print(f"latency plot: {plot}")


def _url(text: str) -> str:
    try:
        parts = urllib.parse.urlsplit(text)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number, or an unclosed [IPv6 bracket
        valid = False
    if not valid:
        raise argparse.ArgumentTypeError(f"expected http://HOST[:PORT], got {text!r}")
    return text


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _seconds(text: str, *, zero_ok: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value >= 0 if zero_ok else value > 0) or math.isinf(value):
        bound = ">= 0" if zero_ok else "> 0"
        raise argparse.ArgumentTypeError(f"expected seconds {bound}, got {text!r}")
    return value


def _interval(text: str) -> float:
    return _seconds(text, zero_ok=True)


def _timeout(text: str) -> float:
    return _seconds(text, zero_ok=False)


def _output(text: str) -> Path:
    # Checked before the run, so that a typo does not throw away a hundred requests.
    path = Path(text)
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(f"no directory {str(path.parent)!r} to write {text!r} in")
    return path


# What sends requests: meaningless with --compare, which reads runs that were sent before.
_SENDING = ("url", "pair", "count", "interval", "timeout")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time GET /predict/<PAIR> over one keep-alive connection.",
        epilog="A run with the worker and beat precomputing, against one without: "
        "--save with.json, stop the worker and beat, --save without.json, "
        "then --compare with.json without.json --histogram --plot latency.png",
    )
    parser.add_argument("--url", type=_url, default="http://127.0.0.1:8000", help="API base URL")
    parser.add_argument("--pair", default="ETH-EUR", help="pair to ask for (default ETH-EUR)")
    parser.add_argument("--count", type=_count, default=100, help="requests to send")
    parser.add_argument(
        "--interval",
        type=_interval,
        default=1.0,
        help="seconds from one request's start to the next's (default 1, 0 for no pause)",
    )
    parser.add_argument(
        "--timeout",
        type=_timeout,
        # Above the API's COMPUTE_TIMEOUT_SECONDS (10), so a slow miss shows the API's
        # own 503 compute_timeout rather than a client-side give-up.
        default=15.0,
        help="seconds to wait for each answer (default 15)",
    )
    parser.add_argument(
        "--histogram",
        action="store_true",
        help="print the latency distribution, by HIT / STALE / MISS, after the summary",
    )
    parser.add_argument(
        "--plot",
        type=_output,
        metavar="FILE.png",
        help="draw the latency distribution into a PNG (needs matplotlib: the bench extra)",
    )
    runs = parser.add_mutually_exclusive_group()
    runs.add_argument(
        "--save", type=_output, metavar="FILE.json", help="write this run's results to a file"
    )
    runs.add_argument(
        "--compare",
        type=Path,
        nargs="+",
        default=[],
        metavar="FILE.json",
        help="send no requests: summarize runs saved with --save, labelled by their file names,"
        " and with --histogram or --plot draw them side by side",
    )
    args = parser.parse_args(argv)

    if args.compare:
        sending = [
            f"--{name}" for name in _SENDING if getattr(args, name) != parser.get_default(name)
        ]
        if sending:
            parser.error(f"--compare sends no requests: leave out {', '.join(sending)}")
        stems = [path.stem for path in args.compare]
        unique = len(set(stems)) == len(stems)  # else label each by its path, as given
        try:
            args.runs = [load_run(path, None if unique else str(path)) for path in args.compare]
        except RunFileError as exc:
            parser.error(str(exc))
    if args.plot is not None:
        try:
            latency_plot.load_pyplot()
        except latency_plot.PlotUnavailable:
            install = f"{shlex.quote(sys.executable)} -m pip install -e '.[bench]'"
            parser.error(
                "--plot draws with matplotlib, which is not installed: "
                f"run {install} in the repository root (the project's bench extra), "
                "or use --histogram, which needs nothing"
            )
    return args


def report(run: Run, args: argparse.Namespace) -> None:
    """The summary of a run just sent, then what --save, --histogram and --plot ask for."""
    print(format_summary(summarize(run.results), run.target, run.connections))
    if args.save is not None:  # first: were drawing to fail, the run is kept
        save_run(run, args.save)
        print(f"saved: {args.save} (--compare it with another run)")
    show_distribution([run], args.histogram, args.plot)


def compare(runs: Sequence[Run], args: argparse.Namespace) -> int:
    """The summary of each saved run, then their distributions side by side."""
    for run in runs:
        print(f"=== {run.label}")
        print(format_summary(summarize(run.results), run.target, run.connections))
    show_distribution(runs, args.histogram, args.plot)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.compare:
        return compare(args.runs, args)
    base_path = urllib.parse.urlsplit(args.url).path.rstrip("/")
    path = f"{base_path}/predict/{urllib.parse.quote(args.pair, safe='')}"
    target = urllib.parse.urljoin(args.url, path)
    label = "this run" if args.save is None else args.save.stem
    client = Client(args.url, args.timeout)
    results: list[Result] = []
    try:
        send_requests(client, path, args.count, args.interval, results)
    except KeyboardInterrupt:
        print(f"\ninterrupted after {len(results)} of {args.count} requests")
        report(Run(label, target, client.connections, tuple(results)), args)
        return 130
    finally:
        client.close()

    if client.connections == 0:  # nothing was measured, so no summary, only the reason
        print(f"no answer from {args.url}: is the API running? (make run)", file=sys.stderr)
        return 1
    report(Run(label, target, client.connections, tuple(results)), args)
    summary = summarize(results)
    if summary.predictions:
        return 0
    if summary.unanswered == summary.requests:
        print(f"no answer from {args.url}: is the API running? (make run)", file=sys.stderr)
    else:
        print(f"no prediction from {target}: every request failed (see above)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
