"""A worker whose host clock is 20 s off (libfaketime): nothing depends on it.

The worker runs under libfaketime (LD_PRELOAD, FAKETIME=+20s or -20s), the API, beat
and Redis on the machine's clock. Every instant the worker stores comes from Redis's
clock (predictions.infra.clock), so it refreshes every pair every interval, the API hardly
ever runs the model, and what clients see agrees with the API's clock.

libfaketime is a Debian package (`make faketime`); without it this skips with the
reason, unless REQUIRE_FAKETIME_TEST=1 (as CI sets) turns the skip into a failure.
"""

from __future__ import annotations

import glob
import os
import time

import pytest
import urllib3

from predictions.model.prediction import parse_time
from tests.harness.http import computations, get
from tests.harness.ports import free_port
from tests.harness.processes import ProcessFactory, RedisServer, wait_for
from tests.harness.store import computed_at
from tests.harness.system import PAIRS, TEST_REFRESH, TEST_TTL

pytestmark = pytest.mark.integration

WATCH_SECONDS = 8


def find_libfaketime() -> str:
    # The multi-threaded variant: Celery's worker and pool run threads.
    patterns = [
        "/usr/lib/*/faketime/libfaketimeMT.so.1",
        "/usr/local/lib/faketime/libfaketimeMT.so.1",
    ]
    for pattern in patterns:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    reason = "libfaketime is not installed (make faketime)"
    if os.environ.get("REQUIRE_FAKETIME_TEST") == "1":
        pytest.fail(f"REQUIRE_FAKETIME_TEST=1 but {reason}")
    pytest.skip(reason)


@pytest.mark.parametrize("skew", ["+20s", "-20s"])
def test_a_worker_with_a_skewed_clock(
    start: ProcessFactory, redis_server: RedisServer, skew: str
) -> None:
    library = find_libfaketime()
    metrics = f"127.0.0.1:{free_port()}"
    worker = start(
        "worker",
        LD_PRELOAD=library,
        FAKETIME=skew,
        WORKER_CONCURRENCY="2",
        WORKER_METRICS_BIND=metrics,
    )
    start("beat")
    client = redis_server.client()
    wait_for(lambda: all(computed_at(client, p) for p in PAIRS), 60, what="every pair cached")
    api = start("api")
    seen: dict[str, set[str]] = {pair: set() for pair in PAIRS}
    deadline = time.monotonic() + WATCH_SECONDS
    while time.monotonic() < deadline:
        for pair in PAIRS:
            sent = time.time()
            answer = get(api, f"/predict/{pair}")
            now = time.time()
            assert answer.status == 200, answer.body
            assert answer.headers["X-Cache"] in ("HIT", "MISS"), answer.headers
            computed = parse_time(answer.body["computed_at"], pair)
            fresh_until = parse_time(answer.body["fresh_until"], pair)
            # By the API's (and this test's) clock: computed in the past, not 20 s
            # ahead or behind, and fresh for at most a TTL from now.
            assert now - TEST_TTL - 1 <= computed <= now + 0.5, (skew, computed - now)
            # Fresh when served, which was after it was asked for (a loaded machine may
            # take a while to answer), and fresh for at most a TTL.
            assert sent <= fresh_until + 0.05 <= now + TEST_TTL + 0.5, (sent, fresh_until, now)
            # The headers agree with the API's clock too: max-age is the freshness left.
            control = answer.headers["Cache-Control"]
            max_age = int(control.split("max-age=")[1].split(",")[0])
            assert 0 <= max_age <= fresh_until - now + 1, (control, fresh_until - now)
            seen[pair].add(answer.body["computed_at"])
        time.sleep(0.05)
    # Refreshed every interval (slack for a loaded machine), by the skewed worker.
    assert all(len(v) >= WATCH_SECONDS / TEST_REFRESH / 2 for v in seen.values()), seen
    assert all(computations(worker, pair) >= WATCH_SECONDS / 2 for pair in PAIRS)
    assert api.count("computed prediction") <= 2
    # The skew was real, measured, exported and logged: Redis minus the worker's clock.
    expected = -float(skew.rstrip("s"))
    # Polled: a measurement whose round trip was too slow (a loaded machine) is retried
    # a second later rather than trusted.
    wait_for(
        lambda: (
            (found := worker_offsets(metrics))
            and all(abs(offset - expected) < 1 for offset in found)
        ),
        15,
        what=f"the worker's clock offset near {expected:g} s",
    )
    side = "ahead of" if expected < 0 else "behind"
    assert worker.count(f"s {side} Redis's") >= 1, worker.output()[-3000:]


def worker_offsets(bind: str) -> list[float]:
    """prediction_clock_offset_seconds as the worker's /metrics shows it."""
    text = urllib3.request("GET", f"http://{bind}/metrics", timeout=5, retries=False).data
    return [
        float(line.rsplit(" ", 1)[1])
        for line in text.decode().splitlines()
        if line.startswith("prediction_clock_offset_seconds")
    ]
