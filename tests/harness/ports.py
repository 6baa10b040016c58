"""Loopback ports: a free one to bind, and whether one accepts connections yet.

A port picked by binding port 0 (as `make run` does, scripts/embedded_redis.py) comes
from the kernel's ephemeral range, which every outgoing connection draws from too:
between the pick and the server's bind, another connection of the machine (the suite
runs several test processes at once, with thousands of connections) may take it. The
suite's ports come from below that range instead, and each test process (pytest-xdist
worker) has a block of its own, so two of them never pick the same port.
"""

from __future__ import annotations

import itertools
import os
import socket

# Below Linux's default ephemeral range (32768-60999), above well-known services.
_FIRST = 20000
_BLOCK = 1500  # ports per test process: 8 processes fit below 32000
_MOST_PROCESSES = 8


def _block_start() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")  # gw0, gw1, ...; unset: alone
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    return _FIRST + (index % _MOST_PROCESSES) * _BLOCK


_candidates = itertools.cycle(range(_BLOCK))
_offset = os.getpid() % _BLOCK  # a rerun soon after starts elsewhere in the block


def free_port() -> int:
    """A loopback port nothing listens on, from this test process's own block.

    Each call moves on through the block, so a port a test just released (a server
    stopped, to be replaced) is not handed out again at once.
    """
    start = _block_start()
    for _ in range(_BLOCK):
        port = start + (_offset + next(_candidates)) % _BLOCK
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {start}..{start + _BLOCK - 1}")


def accepts(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on host:port (a connect within a second)."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0
