"""Suite-wide guard: a test run leaves the checkout as it found it.

The suite keeps everything it writes in temporary directories. A test that wrote into
the checkout (as `make test` once overwrote a running `make run`'s .run/redis-url)
fails the run here, naming the files. Files a `make run` in this checkout writes while
the suite runs (its Redis's snapshot, under .run/redis/) are not the suite's doing and
are left out, as long as that run's .run/redis-url itself is unchanged.
"""

from __future__ import annotations

import pytest

from tests.harness.checkout import changes, snapshot
from tests.harness.processes import ROOT

_BEFORE = pytest.StashKey[dict[str, tuple[int, int]]]()


def pytest_sessionstart(session: pytest.Session) -> None:
    # Under pytest-xdist, the controlling process alone: its session spans every
    # worker's (it starts before they do and ends after), and a worker that finishes
    # first would otherwise judge files another worker's test has not yet removed.
    if hasattr(session.config, "workerinput"):
        return
    session.stash[_BEFORE] = snapshot(ROOT)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    before = session.stash.get(_BEFORE, None)
    if before is None:
        return
    changed = changes(before, snapshot(ROOT))
    if ".run/redis-url" not in changed:
        changed = [path for path in changed if not path.startswith(".run/redis/")]
    if changed:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = "the test run changed the checkout: " + ", ".join(changed[:20])
        if reporter is not None:
            reporter.write_line(message, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
