"""wrk, the load generator: one run against one target, and its result read back
(standard library only: tests/scripts/test_bench.py needs no `bench` extra)."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path

LUA_SCRIPT = Path(__file__).with_name("spread.lua")
RESULT_PREFIX = "BENCH_RESULT "
# Generous: wrk leaves a request that times out out of its latency figures, which would
# hide exactly the slow answers (waits for the model) that the benchmark is after.
REQUEST_TIMEOUT_SECONDS = 10
_RPS_LINE = re.compile(r"^Requests/sec:\s+([0-9.]+)\s*$", re.MULTILINE)


class WrkError(RuntimeError):
    """wrk is missing, failed, or printed something this module cannot read."""


@dataclasses.dataclass(frozen=True)
class WrkResult:
    """One wrk run: throughput, latency percentiles (ms) and the answers counted."""

    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    misses: int  # answers with X-Cache: MISS, which waited for the model
    non_2xx: int
    errors: int  # connect, read and write errors, and timeouts
    split: str = ""  # established connections per worker process, read mid-run

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def problem(self) -> str | None:
        """Why these figures do not measure serving (no answers, mostly errors), or None."""
        if self.requests == 0:
            return "wrk completed no request"
        if self.non_2xx > 0.01 * self.requests:
            return f"{self.non_2xx} of {self.requests} answers were not 2xx"
        return None

    def __str__(self) -> str:
        return (
            f"{self.rps:,.0f} req/s, p50 {self.p50_ms:.3f} ms, p99 {self.p99_ms:.3f} ms, misses "
            f"{self.misses}, not 2xx {self.non_2xx}, errors {self.errors}, split {self.split}"
        )


def parse_output(text: str) -> WrkResult:
    """Read the line spread.lua's done() prints, checked against wrk's own summary."""
    lines = [line for line in text.splitlines() if line.startswith(RESULT_PREFIX)]
    if len(lines) != 1:
        raise WrkError(f"expected one {RESULT_PREFIX.strip()} line, found {len(lines)}")
    try:
        data = json.loads(lines[0][len(RESULT_PREFIX) :])
        p50, p90, p99 = (data["latency_us"][p] / 1000 for p in ("p50", "p90", "p99"))
        result = WrkResult(
            int(data["requests"]), int(data["duration_us"]) / 1e6, p50, p90, p99,
            int(data["misses"]), int(data["non2xx"]), int(data["errors"]),
        )  # fmt: skip
    except (ValueError, KeyError, TypeError) as exc:
        raise WrkError(f"unreadable wrk result {lines[0]!r}: {exc!r}") from None
    if result.seconds <= 0 or result.requests < 0:
        raise WrkError(f"impossible wrk result {lines[0]!r}")
    if (reported := _RPS_LINE.search(text)) is None:
        raise WrkError("no Requests/sec line in wrk's output")
    if abs(float(reported.group(1)) - result.rps) > max(1.0, 0.01 * result.rps):
        raise WrkError(f"wrk reports {reported.group(1)} requests/s, the script {result.rps:.2f}")
    return result


def find_wrk() -> str:
    if (found := shutil.which("wrk")) is None:
        raise WrkError("wrk is not installed: run `make wrk` as root, or apt-get install wrk")
    return found


class WrkRun:
    """wrk in the background (the caller probes servers meanwhile), asking the file's
    pairs in turn or at random."""

    def __init__(
        self, url: str, pairs_file: Path, threads: int, connections: int, seconds: float,
        random_pairs: bool = False,
    ) -> None:  # fmt: skip
        host = urllib.parse.urlsplit(url).hostname or ""
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError(f"the benchmark loads loopback addresses only, not {host!r}")
        self.seconds = max(1, round(seconds))
        argv = [find_wrk(), f"-t{threads}", f"-c{connections}", f"-d{self.seconds}s"]
        argv += [f"--timeout={REQUEST_TIMEOUT_SECONDS}s", f"--script={LUA_SCRIPT}", url]
        argv += ["--", str(pairs_file), *(["random"] if random_pairs else [])]
        self.popen = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )

    def result(self) -> WrkResult:
        """Wait for wrk (bounded) and parse its output."""
        try:
            output, _ = self.popen.communicate(timeout=self.seconds + REQUEST_TIMEOUT_SECONDS + 30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.communicate()
            raise WrkError("wrk did not finish in time") from None
        text = output.decode(errors="replace")
        if self.popen.returncode != 0:
            raise WrkError(f"wrk exited {self.popen.returncode}: {text[-500:]}")
        return parse_output(text)
