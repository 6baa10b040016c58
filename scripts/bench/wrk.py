"""Running wrk against one target and reading its result.

Imports only the standard library, so that tests/scripts/test_bench.py can check the
parsing without the `bench` extra.
"""

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
    max_ms: float
    mean_ms: float
    misses: int
    non_2xx: int
    socket_errors: int
    timeouts: int

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def problem(self, max_error_share: float = 0.01) -> str | None:
        """Why these figures do not measure serving (no answers, mostly errors), or None."""
        if self.requests == 0:
            return "wrk completed no request"
        if self.non_2xx > max_error_share * self.requests:
            return f"{self.non_2xx} of {self.requests} answers were not 2xx"
        return None


def parse_output(text: str) -> WrkResult:
    """Read the line spread.lua's done() prints; raise WrkError if it is not there."""
    lines = [line for line in text.splitlines() if line.startswith(RESULT_PREFIX)]
    if len(lines) != 1:
        raise WrkError(f"expected one {RESULT_PREFIX.strip()} line, found {len(lines)}")
    try:
        data = json.loads(lines[0][len(RESULT_PREFIX) :])
        latency = data["latency_us"]
        result = WrkResult(
            requests=int(data["requests"]),
            seconds=int(data["duration_us"]) / 1e6,
            p50_ms=latency["p50"] / 1000,
            p90_ms=latency["p90"] / 1000,
            p99_ms=latency["p99"] / 1000,
            max_ms=latency["max"] / 1000,
            mean_ms=float(latency["mean"]) / 1000,
            misses=int(data["misses"]),
            non_2xx=int(data["non2xx"]),
            socket_errors=sum(
                int(data[name]) for name in ("connect_errors", "read_errors", "write_errors")
            ),
            timeouts=int(data["timeouts"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise WrkError(f"unreadable wrk result {lines[0]!r}: {exc!r}") from None
    if result.seconds <= 0 or result.requests < 0:
        raise WrkError(f"impossible wrk result {lines[0]!r}")
    # Cross-check against wrk's own summary: the two disagreeing means a broken script.
    reported = _RPS_LINE.search(text)
    if reported is None:
        raise WrkError("no Requests/sec line in wrk's output")
    if abs(float(reported.group(1)) - result.rps) > max(1.0, 0.01 * result.rps):
        raise WrkError(f"wrk reports {reported.group(1)} requests/s, the script {result.rps:.2f}")
    return result


def find_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkError(
            "wrk is not installed: `make bench` installs it as root (apt-get install wrk); "
            "otherwise run `sudo apt-get install wrk`"
        )
    return found


def command(
    url: str,
    pairs_file: Path,
    *,
    threads: int,
    connections: int,
    seconds: float,
    random_pairs: bool = False,
) -> list[str]:
    """The wrk command line; refuses any host but loopback.

    Requests go round the file's pairs in turn, or pick one at random each time.
    """
    host = urllib.parse.urlsplit(url).hostname or ""
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the benchmark loads loopback addresses only, not {host!r}")
    return [
        find_wrk(),
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        f"--timeout={REQUEST_TIMEOUT_SECONDS}s",
        f"--script={LUA_SCRIPT}",
        url,
        "--",
        str(pairs_file),
        *(["random"] if random_pairs else []),
    ]


class WrkRun:
    """wrk running in the background, so that the caller can probe servers meanwhile."""

    def __init__(self, argv: list[str], seconds: float) -> None:
        self.seconds = seconds
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


def run(
    url: str,
    pairs_file: Path,
    *,
    threads: int,
    connections: int,
    seconds: float,
    random_pairs: bool = False,
) -> WrkResult:
    """One bounded wrk run."""
    argv = command(
        url,
        pairs_file,
        threads=threads,
        connections=connections,
        seconds=seconds,
        random_pairs=random_pairs,
    )
    return WrkRun(argv, seconds).result()
