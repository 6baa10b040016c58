"""Time GET /predict/<PAIR> against a running API: one line per request, then a summary.

`make requests` runs it (URL=, PAIR=, N=, INTERVAL=). It needs only the standard library,
and sends every request over one keep-alive connection, opened before the clock starts,
so that the times are the API's and not those of TCP set-up:

    Time taken: 1014.67ms  MISS
    Time taken: 0.42ms  HIT
    Time taken: 3.10ms  503 cache_unavailable

Exit status: 0 if at least one prediction came back, 1 if none did, 130 on Ctrl-C (after
printing the summary so far).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import http.client
import json
import math
import sys
import time
import urllib.parse
from collections.abc import Iterable, Sequence

PERCENTILES = (50, 90, 99)


class Kind(enum.StrEnum):
    HIT = "HIT"  # a prediction served from Redis
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
    """What a run measured: hit and miss latencies in ms, and how many requests failed."""

    requests: int
    hits: tuple[float, ...]
    misses: tuple[float, ...]
    errors: int  # answered without a prediction, or not answered at all
    unanswered: int  # the errors that got no answer at all
    hits_in_api: tuple[float, ...] = ()  # Server-Timing of the hits that sent one

    @property
    def hit_ratio(self) -> float | None:
        """Hits over predictions served; errors are left out, as they served nothing."""
        served = len(self.hits) + len(self.misses)
        return len(self.hits) / served if served else None

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
    """Sort results into hits, misses and errors."""
    results = list(results)
    return Summary(
        requests=len(results),
        hits=tuple(r.ms for r in results if r.kind is Kind.HIT and r.ms is not None),
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
    """The summary block printed after the per-request lines."""
    served = len(summary.hits) + len(summary.misses)
    ratio = "n/a" if summary.hit_ratio is None else f"{summary.hit_ratio:.1%}"
    speed_up = "n/a" if summary.speed_up is None else f"{summary.speed_up:.1f}x"
    return "\n".join(
        [
            f"--- {_plural(summary.requests, 'request')} to {target}"
            f" over {_plural(connections, 'connection')}",
            f"hit ratio: {ratio} ({len(summary.hits)} of {served} predictions)   "
            f"errors: {summary.errors} ({summary.unanswered} without an answer)",
            _row("ms", "n", [*(f"p{p}" for p in PERCENTILES), "max"])
            + "   (nearest-rank percentiles)",
            _latency_row("hits", summary.hits),
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


def server_duration(response: http.client.HTTPResponse) -> float | None:
    """The first dur= of a Server-Timing header (W3C), in ms; None if there is none."""
    for metric in (response.getheader("Server-Timing") or "").split(","):
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
        cache = (response.getheader("X-Cache") or "").strip().upper()
        if response.status == 200 and cache in (Kind.HIT, Kind.MISS):
            return Result(Kind(cache), ms, server_ms=server_duration(response))
        if response.status == 200:
            return Result(Kind.ERROR, ms, f"200 but X-Cache is {cache or 'missing'}")
        return Result(Kind.ERROR, ms, describe_answer(response.status, response.reason, body))


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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time GET /predict/<PAIR> over one keep-alive connection."
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
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    base_path = urllib.parse.urlsplit(args.url).path.rstrip("/")
    path = f"{base_path}/predict/{urllib.parse.quote(args.pair, safe='')}"
    target = urllib.parse.urljoin(args.url, path)
    client = Client(args.url, args.timeout)
    results: list[Result] = []
    try:
        send_requests(client, path, args.count, args.interval, results)
    except KeyboardInterrupt:
        print(f"\ninterrupted after {len(results)} of {args.count} requests")
        print(format_summary(summarize(results), target, client.connections))
        return 130
    finally:
        client.close()

    if client.connections == 0:  # nothing was measured, so no summary, only the reason
        print(f"no answer from {args.url}: is the API running? (make run)", file=sys.stderr)
        return 1
    summary = summarize(results)
    print(format_summary(summary, target, client.connections))
    if summary.hits or summary.misses:
        return 0
    if summary.unanswered == summary.requests:
        print(f"no answer from {args.url}: is the API running? (make run)", file=sys.stderr)
    else:
        print(f"no prediction from {target}: every request failed (see above)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
