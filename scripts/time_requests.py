"""Time GET /predict/<PAIR> against a running API: one line per request, then a summary.

`make requests` runs it (URL=, PAIR=, N=, INTERVAL=, HISTOGRAM=1), with the project's
virtualenv: outcomes are named as the API names them (predictions.cache.Outcome). Every
request goes over one keep-alive connection, opened before the clock starts, so
that the times are the API's and not those of TCP set-up:

    Time taken: 1014.67ms  MISS
    Time taken: 0.42ms  HIT
    Time taken: 3.10ms  503 cache_unavailable

Exit status: 0 if at least one prediction came back, 1 if none did, 2 for a bad
argument, 130 on Ctrl-C (after the summary so far).
"""

from __future__ import annotations

import argparse
import collections
import http.client
import json
import math
import sys
import time
import urllib.parse
from collections.abc import Sequence

from predictions.cache import Outcome

# The X-Cache values of an answer with a prediction: HIT, STALE, MISS.
PREDICTIONS = tuple(dict.fromkeys(outcome.header for outcome in Outcome if outcome.header))
LETTERS = {kind: kind[0] for kind in PREDICTIONS}  # H, S, M; anything else is an error: E
ROWS = dict(zip(PREDICTIONS, ("hits", "stale", "misses"), strict=True))


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank p-th percentile: always a latency that was measured (p99 of 100
    requests is the second slowest); None if there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    # p * n / 100, not p / 100 * n: exact for whole percentages (0.07 * 100 > 7).
    return ordered[max(1, math.ceil(p * len(ordered) / 100)) - 1]


def outcome(status: int, reason: str, x_cache: str | None, body: bytes) -> str:
    """HIT, STALE or MISS for a 200 with a prediction; else the error, as '503 code'."""
    cache = (x_cache or "").strip().upper()
    if status == 200:
        return cache if cache in PREDICTIONS else f"200 but X-Cache is {cache or 'missing'}"
    try:
        code = json.loads(body)["error"]["code"]  # the API's error shape
    except (ValueError, LookupError, TypeError):  # a proxy's page, say
        code = None
    return f"{status} {code}" if isinstance(code, str) else f"{status} {reason}".rstrip()


class Client:
    """GETs over one keep-alive connection, reopened only when the server closed it."""

    def __init__(self, url: str, timeout: float) -> None:
        parts = urllib.parse.urlsplit(url)
        https = parts.scheme == "https"
        connection = http.client.HTTPSConnection if https else http.client.HTTPConnection
        self.conn = connection(parts.hostname or "", parts.port, timeout=timeout)
        self.timeout = timeout
        self.connections = 0  # how many were opened: 1 while keep-alive holds

    def get(self, path: str, retry: bool = True) -> tuple[float | None, str]:
        """(ms, outcome) of one GET; ms is None when no answer came back."""
        if self.conn.sock is None:
            try:  # outside the timed section, so that the first request is timed alike
                self.conn.connect()
            except OSError as exc:
                self.conn.close()
                return None, f"cannot connect to {self.conn.host}:{self.conn.port}: {exc}"
            self.connections += 1
            retry = False
        try:
            start = time.perf_counter()
            self.conn.request("GET", path, headers={"Accept": "application/json"})
            response = self.conn.getresponse()
            body = response.read()
            ms = (time.perf_counter() - start) * 1000
        except (ConnectionResetError, BrokenPipeError) as exc:  # RemoteDisconnected too
            self.conn.close()
            # The server closed the idle connection (gunicorn's keep-alive) as we sent: a
            # GET is safe to repeat, once, on a new connection.
            return self.get(path, retry=False) if retry else (None, f"connection lost: {exc}")
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()  # else a late answer would be read as the next request's
            timed_out = isinstance(exc, TimeoutError)
            return None, f"no answer within {self.timeout:g} s" if timed_out else repr(exc)
        return ms, outcome(response.status, response.reason, response.getheader("X-Cache"), body)


def summary(results: Sequence[tuple[float | None, str]], target: str, connections: int) -> str:
    kinds: dict[str, list[float]] = collections.defaultdict(list)
    for ms, kind in results:
        if ms is not None and kind in PREDICTIONS:
            kinds[kind].append(ms)
    served = sum(len(values) for values in kinds.values())
    errors = len(results) - served
    ratio = f"{len(kinds['HIT']) / served:.1%}" if served else "n/a"
    lines = [
        f"--- {len(results)} requests to {target} over {connections} connection(s)",
        f"hit ratio: {ratio} ({len(kinds['HIT'])} of {served} predictions, "
        f"{len(kinds['STALE'])} stale)   errors: {errors}",
        f"{'ms':<8}{'n':>6}{'p50':>10}{'p90':>10}{'p99':>10}{'max':>10}"
        "   (nearest-rank percentiles)",
    ]
    for kind in PREDICTIONS:
        cells = [percentile(kinds[kind], p) for p in (50, 90, 99)]
        cells.append(max(kinds[kind], default=None))
        shown = "".join(f"{'n/a' if c is None else f'{c:.2f}':>10}" for c in cells)
        lines.append(f"{ROWS[kind]:<8}{len(kinds[kind]):>6}{shown}")
    return "\n".join(lines)


def bucket(ms: float) -> int:
    """Log-scale buckets in 1-2-5 steps: 0 is 1-2 ms, 1 is 2-5 ms, 2 is 5-10 ms, -1 0.5-1."""
    ms = max(ms, 0.001)
    decade = math.floor(math.log10(ms))
    decade -= ms < 10.0**decade  # log10 may round up just below a power of ten
    step = sum(ms >= edge * 10.0**decade for edge in (2, 5))
    return 3 * decade + step


def edge(index: int) -> float:
    decade, step = divmod(index, 3)
    return (1, 2, 5)[step] * 10.0**decade


def histogram(results: Sequence[tuple[float | None, str]], width: int = 60) -> str:
    """One row per bucket, from the fastest answer's to the slowest's, empty ones too;
    each answer's kind as a letter (H hit, S stale, M miss, E error)."""
    found = collections.Counter(
        (bucket(ms), LETTERS.get(kind, "E")) for ms, kind in results if ms is not None
    )
    if not found:
        return "histogram: no answers"
    rows = range(min(b for b, _ in found), max(b for b, _ in found) + 1)
    largest = max(sum(n for (b, _), n in found.items() if b == row) for row in rows)
    scale = min(1.0, width / largest)
    lines = []
    for row in rows:
        counts = [(letter, found[row, letter]) for letter in "HSME"]
        bar = "".join(letter * max(1, round(n * scale)) for letter, n in counts if n)
        label = f"{edge(row):g}-{edge(row + 1):g}"
        lines.append(f"{label:>10}  {bar} {sum(n for _, n in counts) or ''}".rstrip())
    return "\n".join([*lines, "ms, log scale; H hit, S stale, M miss, E error"])


def _number(text: str, zero_ok: bool = False) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 if zero_ok else value > 0) or math.isinf(value):
        raise argparse.ArgumentTypeError(f"expected a number {'>=' if zero_ok else '>'} 0")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _url(text: str) -> str:
    try:
        parts = urllib.parse.urlsplit(text)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number
        valid = False
    if not valid:
        raise argparse.ArgumentTypeError(f"expected http://HOST[:PORT], got {text!r}")
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", type=_url, default="http://127.0.0.1:8000", help="API base URL")
    parser.add_argument("--pair", default="ETH-EUR", help="pair to ask for (default ETH-EUR)")
    parser.add_argument("--count", type=_count, default=100, help="requests to send")
    parser.add_argument(
        "--interval",
        type=lambda text: _number(text, zero_ok=True),
        default=1.0,
        help="seconds from one request's start to the next's (default 1; 0: no pause)",
    )
    # Above the API's COMPUTE_TIMEOUT_SECONDS (10): a slow miss shows the API's own 503.
    parser.add_argument("--timeout", type=_number, default=15.0, help="per request")
    parser.add_argument("--histogram", action="store_true", help="print the distribution")
    args = parser.parse_args(argv)

    base = urllib.parse.urlsplit(args.url).path.rstrip("/")
    path = f"{base}/predict/{urllib.parse.quote(args.pair, safe='')}"
    target = urllib.parse.urljoin(args.url, path)
    client = Client(args.url, args.timeout)
    results: list[tuple[float | None, str]] = []
    status = 0
    try:
        next_start = time.monotonic()
        for _ in range(args.count):
            time.sleep(max(0.0, next_start - time.monotonic()))
            next_start = time.monotonic() + args.interval  # start to start
            ms, kind = client.get(path)
            results.append((ms, kind))
            print(
                f"No answer: {kind}" if ms is None else f"Time taken: {ms:.2f}ms  {kind}",
                flush=True,
            )
            if client.connections == 0:  # never reached: more refusals would tell nothing
                break
    except KeyboardInterrupt:
        print(f"\ninterrupted after {len(results)} of {args.count} requests")
        status = 130
    finally:
        client.conn.close()
    if client.connections == 0:
        print(f"no answer from {args.url}: is the API running? (make run)", file=sys.stderr)
        return status or 1
    print(summary(results, target, client.connections))
    if args.histogram:
        print(histogram(results))
    if status == 0 and not any(ms is not None and kind in PREDICTIONS for ms, kind in results):
        print(f"no prediction from {target}: every request failed (see above)", file=sys.stderr)
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
