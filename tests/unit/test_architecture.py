"""The layering the project promises: api/ and worker/ share predictions/ only; the
test harness (tests/harness/) is imported by tests and benchmarks, never the reverse."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# Our own top-level modules: anything else a module imports is the standard library or
# a third-party package.
FIRST_PARTY = frozenset({"predictions", "api", "worker", "beat_schedule", "examples", "scripts",
                         "tests", "conftest"})  # fmt: skip
# Product scripts the harness may use: each imports nothing of ours (checked below), so
# the harness cannot reach back into the tests through them.
HARNESS_SCRIPTS = frozenset({"scripts.embedded_redis"})


def _imports(path: Path) -> set[str]:
    """Every module a file imports, dotted; ``from a import b`` gives a and a.b (b may be
    a module). Relative imports are refused: they would hide what is imported."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module, f"{path}: relative import"
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _imported_modules(package: str) -> set[str]:
    return {
        name.split(".")[0] for path in (ROOT / package).rglob("*.py") for name in _imports(path)
    }


def _first_party(path: Path) -> set[str]:
    return {name for name in _imports(path) if name.split(".")[0] in FIRST_PARTY}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


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


def test_the_harness_imports_only_the_core_and_leaf_scripts() -> None:
    # Nothing in tests/harness/ imports a test module, a conftest, api/ or worker/.
    for path in sorted((ROOT / "tests" / "harness").rglob("*.py")):
        for name in _first_party(path):
            allowed = (
                _within(name, "tests.harness")
                or _within(name, "predictions")
                or any(_within(name, script) for script in HARNESS_SCRIPTS)
                or name == "tests"  # `from tests.harness import x` names the package too
            )
            assert allowed, f"{path.relative_to(ROOT)} imports {name}"


@pytest.mark.parametrize("script", sorted(HARNESS_SCRIPTS))
def test_scripts_the_harness_uses_are_leaves(script: str) -> None:
    path = ROOT / (script.replace(".", "/") + ".py")
    assert _first_party(path) == set(), f"{script} imports {_first_party(path)}"


def test_benchmarks_use_the_harness_and_no_other_test_module() -> None:
    for path in sorted((ROOT / "scripts" / "bench").rglob("*.py")):
        tests = {n for n in _first_party(path) if _within(n, "tests") or _within(n, "conftest")}
        stray = {n for n in tests if n != "tests" and not _within(n, "tests.harness")}
        assert not stray, f"{path.relative_to(ROOT)} imports {sorted(stray)}"


@pytest.mark.parametrize("package", ["predictions", "api", "worker", "examples", "scripts"])
def test_the_product_never_imports_the_tests(package: str) -> None:
    # scripts/bench/ is the one exception: a benchmark starts servers with the harness.
    for path in sorted((ROOT / package).rglob("*.py")):
        if path.is_relative_to(ROOT / "scripts" / "bench"):
            continue
        tests = {n for n in _first_party(path) if _within(n, "tests") or _within(n, "conftest")}
        assert not tests, f"{path.relative_to(ROOT)} imports {sorted(tests)}"
