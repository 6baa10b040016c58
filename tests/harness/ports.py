"""Loopback ports: a free one to bind, and whether one accepts connections yet."""

from __future__ import annotations

import socket

# One definition, shared with `make run` (scripts/run.py), which binds its embedded
# Redis the same way.
from scripts.embedded_redis import free_port

__all__ = ["accepts", "free_port"]


def accepts(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something listens on host:port (a connect within a second)."""
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, port)) == 0
