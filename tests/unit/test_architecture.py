"""The layering the project promises: api/ and worker/ share predictions/ only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imported_modules(package: str) -> set[str]:
    names: set[str] = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("api", {"celery", "kombu", "worker", "beat_schedule"}),
        ("worker", {"api", "flask", "werkzeug", "gunicorn"}),
        ("predictions", {"api", "worker", "celery", "kombu", "flask", "werkzeug"}),
    ],
)
def test_packages_import_only_what_they_may(package: str, forbidden: set[str]) -> None:
    assert _imported_modules(package) & forbidden == set()


def test_serving_the_api_never_loads_celery() -> None:
    # The real entry point, in a fresh interpreter: nothing imports Celery indirectly.
    code = (
        "import sys, api.wsgi; "
        "leaked = sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('celery', 'kombu', 'worker')); "
        "print(leaked); sys.exit(1 if leaked else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "", "SIMULATED_MODEL_LATENCY_SECONDS": "0"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
