"""Raw HTTP/1.1 load for serving tests: bursts, slow and idle clients, a latency probe.

asyncio streams, not an HTTP library: a test needs connections that misbehave on
purpose (headers a line a second, never reading), and a thousand of them at once. Every
loop here is bounded in count and in time. ``python -m tests.harness.load probe ...``
runs the probe in a process of its own, so that the test's own load does not skew its
timings. The threads that keep requests coming during a fault are tests/harness/faults.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

HOST = "127.0.0.1"


@dataclasses.dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float  # from sending the request to the end of the body


def request_bytes(path: str, keep_alive: bool = False) -> bytes:
    connection = "keep-alive" if keep_alive else "close"
    return f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: {connection}\r\n\r\n".encode()


async def read_reply(reader: asyncio.StreamReader, started: float) -> Reply:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Reply(status, headers, body, time.perf_counter() - started)


async def burst(
    port: int, path: str, count: int, wave: int = 200, timeout: float = 30
) -> list[Reply]:
    """Open ``count`` connections (``wave`` at a time, as real clients would), then send
    every request at once and read every reply."""
    connections: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    for start in range(0, count, wave):
        opened = await asyncio.wait_for(
            asyncio.gather(
                *(asyncio.open_connection(HOST, port) for _ in range(min(wave, count - start)))
            ),
            timeout,
        )
        connections.extend(opened)
    started = time.perf_counter()
    payload = request_bytes(path)
    for _, writer in connections:
        writer.write(payload)

    async def one(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Reply:
        try:
            return await read_reply(reader, started)
        finally:
            writer.close()

    try:
        return await asyncio.wait_for(
            asyncio.gather(*(one(reader, writer) for reader, writer in connections)), timeout
        )
    finally:
        for _, writer in connections:
            writer.close()


async def trickle(port: int, count: int, line_seconds: float, seconds: float) -> list[float]:
    """``count`` connections that send a request's start, then a header line every
    ``line_seconds``, for at most ``seconds``; each one's time until the server cut it
    (``seconds`` if it never did)."""

    async def one() -> float:
        reader, writer = await asyncio.open_connection(HOST, port)
        started = time.monotonic()
        try:
            writer.write(b"GET /predict/ETH-EUR HTTP/1.1\r\n")
            line = 0
            while time.monotonic() - started < seconds:
                await writer.drain()
                try:
                    data = await asyncio.wait_for(reader.read(1024), line_seconds)
                except TimeoutError:
                    line += 1
                    writer.write(f"X-Trickle-{line}: {line}\r\n".encode())
                    continue
                if not data:  # closed by the server
                    return time.monotonic() - started
            return seconds
        except (ConnectionError, OSError):
            return time.monotonic() - started
        finally:
            writer.close()

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def idle(port: int, count: int, seconds: float) -> list[float]:
    """``count`` connections that send nothing; each one's time until the server cut it."""

    async def one() -> float:
        reader, writer = await asyncio.open_connection(HOST, port)
        started = time.monotonic()
        try:
            await asyncio.wait_for(reader.read(1), seconds)
            return time.monotonic() - started
        except TimeoutError:
            return seconds
        except (ConnectionError, OSError):
            return time.monotonic() - started
        finally:
            writer.close()

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def slow_readers(port: int, count: int, pipelined: int, seconds: float) -> int:
    """``count`` connections that each send ``pipelined`` requests at once and then read
    the replies a few bytes a second, for ``seconds``; bytes read in all."""

    async def one() -> int:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (HOST, port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        started = time.monotonic()
        got = 0
        try:
            writer.write(request_bytes("/predict/ETH-EUR", keep_alive=True) * pipelined)
            await writer.drain()
            while time.monotonic() - started < seconds:
                data = await reader.read(16)
                if not data:
                    break
                got += len(data)
                await asyncio.sleep(1)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
        return got

    return sum(await asyncio.gather(*(one() for _ in range(count))))


def probe(
    port: int, path: str, seconds: float, interval: float, limit: int = 5000
) -> dict[str, object]:
    """Sequential requests, each on a new connection, for ``seconds``: every status and
    latency (what a well-behaved client sees)."""
    statuses: list[int] = []
    latencies: list[float] = []
    payload = request_bytes(path)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and len(statuses) < limit:
        started = time.perf_counter()
        try:
            with socket.create_connection((HOST, port), timeout=5) as sock:
                sock.sendall(payload)
                data = b""
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            statuses.append(int(data.split(b" ", 2)[1]) if data else 0)
        except OSError:
            statuses.append(0)  # not answered within the client's 5 s
        latencies.append(time.perf_counter() - started)
        time.sleep(interval)
    return {"statuses": statuses, "latencies": latencies}


@contextlib.contextmanager
def probing(
    port: int, seconds: float, path: str = "/predict/ETH-EUR"
) -> Iterator[dict[str, list[float]]]:
    """``probe`` in a process of its own for ``seconds``, while the block runs; the dict
    it yields holds its statuses and latencies once the block is done."""
    found: dict[str, list[float]] = {}
    command = [
        sys.executable, "-m", "tests.harness.load", "probe", "--port", str(port),
        "--path", path, "--seconds", str(seconds), "--interval", "0.005",
    ]  # fmt: skip
    # Popen's own context closes the pipe and waits, also when the block raises: an
    # unclosed pipe would fail a later test with a ResourceWarning.
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE) as process:
        try:
            yield found
            out, _ = process.communicate(timeout=seconds + 30)
        finally:
            if process.poll() is None:
                process.kill()
    found.update(json.loads(out))


def percentile(values: Iterable[float], p: float) -> float:
    """The nearest-rank p-th percentile (0 <= p <= 100) of values; NaN if there are none.

    Nearest-rank, as scripts/time_requests.py reports them: always a latency that was
    measured, never one interpolated between two (p99 of 100 is the second slowest).
    """
    if not 0 <= p <= 100:
        raise ValueError(f"percentile must be within 0..100, got {p}")
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    # p * n / 100 rather than p / 100 * n: exact for whole percentages.
    return ordered[max(0, math.ceil(p * len(ordered) / 100) - 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.load")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("probe", help="sequential requests; prints JSON statuses and latencies")
    run.add_argument("--port", type=int, required=True)
    run.add_argument("--path", default="/predict/ETH-EUR")
    run.add_argument("--seconds", type=float, default=5)
    run.add_argument("--interval", type=float, default=0.01)
    args = parser.parse_args(argv)
    json.dump(probe(args.port, args.path, args.seconds, args.interval), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
