"""A dead process's metric files are folded into archive files: bounded, and exact."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.harness.processes import ROOT

SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from predictions.infra import metrics

    def child(n):
        pid = os.fork()
        if pid == 0:
            metrics.REQUESTS.labels("hit").inc(n)
            metrics.REQUEST_SECONDS.labels("hit").observe(0.001)
            metrics.CLOCK_OFFSET.set(n)
            metrics.CIRCUIT_OPEN.set(1)
            os._exit(0)
        os.waitpid(pid, 0)
        return pid

    for n in range(1, 21):  # 20 recycled workers
        metrics.mark_process_dead(child(n))
    # This (live) process's own files stay; of the 20 dead ones, only the archives.
    files = sorted(
        f for f in os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        if f.endswith(".db") and not f.endswith(f"_{os.getpid()}.db")
    )
    print(files)
    sys.stdout.write(metrics.exposition().decode())
    """
)


def test_twenty_dead_processes_leave_three_files_and_exact_totals(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=60, check=True,
    )  # fmt: skip
    first, _, text = result.stdout.partition("\n")
    assert first == str(
        ["counter_archive.db", "gauge_mostrecent_archive.db", "histogram_archive.db"]
    )
    assert 'prediction_requests_total{outcome="hit"} 210.0' in text  # 1 + 2 + ... + 20
    assert 'prediction_request_duration_seconds_count{outcome="hit"} 20.0' in text
    assert "\nprediction_clock_offset_seconds 20.0" in text  # the most recent
    assert "\nprediction_circuit_open 0.0" in text  # dead processes' live gauges are gone
