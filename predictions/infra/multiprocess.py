"""Where prometheus-client's multiprocess mode keeps each process's metric values.

Kept apart from predictions.infra.metrics on purpose: this must run before anything imports
prometheus_client, which picks its storage once, at import.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def use_multiprocess_dir(role: str) -> None:
    """Give this server's processes a directory for their metrics (in the parent).

    A directory the operator set is used as is (and emptied by whoever owns it).
    Otherwise a new temporary one is made, inherited by the forked children, and
    removed when the process that made it exits.
    """
    if os.environ.get(MULTIPROC_ENV):
        os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)
        return
    made = tempfile.mkdtemp(prefix=f"prediction-cache-{role}-metrics-")
    os.environ[MULTIPROC_ENV] = made
    owner = os.getpid()

    def remove() -> None:
        if os.getpid() == owner:  # not in a forked child that happens to exit cleanly
            shutil.rmtree(made, ignore_errors=True)

    atexit.register(remove)
