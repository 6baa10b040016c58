"""Several workers on one broker (`docker compose up --scale worker=3`, or Kubernetes
replicas): they share the refreshes, and every pair is still refreshed once per
interval, not once per worker."""

from __future__ import annotations

import time

import pytest

from tests.harness.http import computations
from tests.harness.processes import ProcessFactory, RedisServer, wait_for
from tests.harness.store import computed_at
from tests.harness.system import PAIRS, TEST_REFRESH

pytestmark = pytest.mark.integration

WORKERS = 3
# Enough to tell once per interval (about 6) from once per worker (about 18) apart.
INTERVALS = 6


def test_three_workers_refresh_each_pair_once_per_interval(
    start: ProcessFactory, redis_server: RedisServer
) -> None:
    # One pool process each: three workers, like three one-core containers.
    workers = [start("worker", f"worker{i}", WORKER_CONCURRENCY="1") for i in range(WORKERS)]
    client = redis_server.client()
    start("beat")
    wait_for(lambda: all(computed_at(client, p) for p in PAIRS), 60, what="every pair cached")
    before = {pair: sum(computations(w, pair) for w in workers) for pair in PAIRS}
    by_worker_before = [sum(computations(w, p) for p in PAIRS) for w in workers]
    started = time.monotonic()
    time.sleep(INTERVALS * TEST_REFRESH)
    elapsed = time.monotonic() - started
    intervals = elapsed / TEST_REFRESH
    for pair in PAIRS:
        done = sum(computations(w, pair) for w in workers) - before[pair]
        # Once per interval: three workers must not make it three times. A boundary
        # on either side, and a late refresh on a loaded machine, give the slack.
        assert intervals - 3 <= done <= intervals + 2, (pair, done, intervals)
    shares = [
        sum(computations(w, p) for p in PAIRS) - before
        for w, before in zip(workers, by_worker_before, strict=True)
    ]
    assert sum(1 for share in shares if share) >= 2, f"the refreshes were not shared: {shares}"
    assert all(w.running() for w in workers)
