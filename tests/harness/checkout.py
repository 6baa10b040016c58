"""What a test run may not change: the checkout's files, a running `make run`'s state.

``snapshot(root)`` maps every file under the checkout to its size and modification
time, leaving out the tools' own caches (the virtualenv, bytecode, pytest's and
Hypothesis's caches, mypy's and ruff's) and git's internals.
"""

from __future__ import annotations

import os
from pathlib import Path

SKIPPED = frozenset(
    {".git", ".venv", "__pycache__", ".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache"}
)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """path -> (size, mtime_ns) for every file the suite must leave alone."""
    found: dict[str, tuple[int, int]] = {}
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = [d for d in subdirs if d not in SKIPPED and not d.endswith(".egg-info")]
        for name in files:
            path = Path(directory) / name
            try:
                stat = path.lstat()
            except FileNotFoundError:
                continue
            found[str(path.relative_to(root))] = (stat.st_size, stat.st_mtime_ns)
    return found


def changes(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    """Paths added, removed or modified, sorted."""
    return sorted(
        path for path in before.keys() | after.keys() if before.get(path) != after.get(path)
    )
