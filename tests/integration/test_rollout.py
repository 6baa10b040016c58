"""Model rollouts against the real system: `make rollout` and `make rollback` under load
(zero misses, zero errors, one version per response, old before the flip and new after
it), refreshes following the active version, and monotonic writes in a real Redis."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import urllib3

from predictions.cache.store import PredictionStore
from predictions.infra.keys import active_version_key, prediction_key
from predictions.model import LogLinearTrendModel
from predictions.model.market_data import SyntheticMarketData
from predictions.model.predictor import Predictor
from tests.harness.doubles import CountingModel, HostClock, ManualClock
from tests.harness.http import get
from tests.harness.processes import BIN, ROOT, Process, ProcessFactory, RedisServer, wait_for
from tests.harness.system import PAIRS, TEST_REFRESH

pytestmark = pytest.mark.integration

OLD = LogLinearTrendModel.version
NEW_MODEL = "examples.template_model:TemplateModel"
NEW = "naive-last-price-1"
HTTP = urllib3.PoolManager(maxsize=16, retries=False, timeout=urllib3.Timeout(total=10))
# Answers each phase of the rollout test waits for: three phases of them make the
# more than 200 it asserts.
PHASE_ANSWERS = 70


@dataclasses.dataclass(frozen=True)
class Seen:
    sent: float
    received: float
    status: int
    cache: tuple[str, ...]  # X-Cache, or each batch item's status
    versions: frozenset[str]


def _load(api: Process, stop: threading.Event, seen: list[Seen], batch: bool) -> None:
    base = f"http://{api.env['API_BIND']}"
    i = 0
    while not stop.is_set():
        pair = PAIRS[i % len(PAIRS)]
        i += 1
        path = f"/predict?pairs={','.join(PAIRS)}" if batch else f"/predict/{pair}"
        sent = time.monotonic()
        response = HTTP.request("GET", base + path)
        received = time.monotonic()
        body = response.json() if response.data else {}
        if batch and response.status == 200:
            items = body["items"]
            cache = tuple(item["status"] for item in items)
            versions = frozenset(
                item["prediction"]["model_version"] for item in items if "prediction" in item
            )
        else:
            cache = (response.headers.get("X-Cache", ""),)
            versions = frozenset({body.get("model_version", "")})
        seen.append(Seen(sent, received, response.status, cache, versions))


def _run_make(target: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # our own Makefile
        ["make", "--no-print-directory", target, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _make(target: str, env: dict[str, str], *args: str) -> tuple[float, float]:
    """Run `make <target>`, which must succeed; return when it started and ended."""
    started = time.monotonic()
    done = _run_make(target, env, *args)
    ended = time.monotonic()
    assert done.returncode == 0, done.stdout + done.stderr
    return started, ended


def _check_switch(seen: list[Seen], started: float, ended: float, old: str, new: str) -> None:
    """Old before the switch began, new after it ended, never old again once new."""
    around = [s for s in seen if s.received >= started - 1 and s.sent <= ended + 1]
    assert {s.versions for s in around} >= {frozenset({old}), frozenset({new})}
    for s in seen:
        if s.received < started:
            assert s.versions == {old}, s
        if started <= s.sent and s.received <= ended + 1:
            assert s.versions in ({old}, {new}), s  # one version per response, batches too
    first_new = min(s.received for s in seen if s.versions == {new} and s.sent >= started)
    late_old = [s for s in seen if s.sent > first_new and s.versions != {new}]
    assert not late_old, late_old[:3]


@pytest.fixture
def sklearn_model(tmp_path: Path) -> tuple[dict[str, str], str]:
    """The worked example, trained as its README says: (environment, version)."""
    artifact = tmp_path / "sklearn" / "model.joblib"
    done = subprocess.run(
        [str(BIN / "python"), "-m", "examples.sklearn_trend.train", "--out", str(artifact)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    version = re.search(r"version (sklearn-trend-[0-9a-f]+)", done.stdout)
    assert version, done.stdout
    return {"SKLEARN_TREND_MODEL_PATH": str(artifact)}, version[1]


# Zero stale answers under load through two `make` runs that load scikit-learn: run
# alone (`make test`'s serial pass), where no neighbour slows the worker past the TTL.
@pytest.mark.serial
def test_rollout_and_rollback_of_the_example_model_under_load_miss_nothing(
    start: ProcessFactory,
    redis_server: RedisServer,
    service_env: dict[str, str],
    sklearn_model: tuple[dict[str, str], str],
) -> None:
    env, new = sklearn_model
    # Long enough that a worker process loading scikit-learn on a busy machine never
    # lets a precomputed prediction go stale: a STALE answer would count as a miss.
    env = {**env, "PREDICTION_TTL_SECONDS": "20"}
    worker = start("worker", **env)
    start("beat", **env)
    api = start("api", **env)
    wait_for(
        lambda: all(get(api, f"/predict/{p}").headers["X-Cache"] == "HIT" for p in PAIRS),
        30,
        what="every pair a hit",
    )
    seen: list[Seen] = []
    stop = threading.Event()
    threads = [
        threading.Thread(target=_load, args=(api, stop, seen, batch))
        for batch in (False, False, False, True)
    ]
    for thread in threads:
        thread.start()
    try:
        # Each phase lasts its stated time, and until it has had its share of the
        # requests counted below: a slow machine takes longer, it does not fail.
        time.sleep(1.5)
        wait_for(lambda: len(seen) >= PHASE_ANSWERS, 60, what="load before the rollout")
        # The pinned version, as the example's README says to roll it out.
        model = f"MODEL=examples.sklearn_trend.model:{new}"
        rolled = _make("rollout", {**service_env, **env}, model)
        time.sleep(2 * TEST_REFRESH + 1)
        wait_for(
            lambda: sum(1 for s in seen if s.sent > rolled[1]) >= PHASE_ANSWERS,
            60,
            what="load after the rollout",
        )
        rolled_back = _make("rollback", {**service_env, **env})
        time.sleep(1.5)
        wait_for(
            lambda: sum(1 for s in seen if s.sent > rolled_back[1]) >= PHASE_ANSWERS,
            60,
            what="load after the rollback",
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    after_rollout = [s for s in seen if s.received < rolled_back[0]]
    after_rollback = [s for s in seen if s.sent > rolled[1]]

    assert len(seen) > 200
    assert {s.status for s in seen} == {200}  # zero errors
    stale = [
        (round(s.sent - rolled[0], 2), s.versions) for s in seen if set(s.cache) - {"HIT", "fresh"}
    ]
    assert not stale, (stale[:5], worker.output()[-3000:])
    _check_switch(after_rollout, *rolled, OLD, new)
    _check_switch(after_rollback, *rolled_back, new, OLD)
    client = redis_server.client()
    assert client.get(active_version_key()) == OLD.encode()


def test_refreshes_follow_the_active_version_and_old_keys_are_left_to_expire(
    start: ProcessFactory, redis_server: RedisServer, service_env: dict[str, str]
) -> None:
    worker = start("worker")
    start("beat")
    client = redis_server.client()
    wait_for(lambda: client.exists(prediction_key(PAIRS[0], OLD)), 30, what="a first refresh")
    _make("rollout", service_env, f"MODEL={NEW_MODEL}")
    new_key, old_key = prediction_key(PAIRS[0], NEW), prediction_key(PAIRS[0], OLD)
    rolled_out = client.get(new_key)
    # The worker refreshes the new version from its next batch on ...
    refreshed = wait_for(lambda: client.get(new_key) != rolled_out, 15, what="", fail=False)
    assert refreshed, "no refresh of the new version:\n" + worker.output()[-4000:]
    # ... and leaves the old one alone (once a batch that read the pointer before the
    # flip has landed): the same entry, its expiry running out.
    time.sleep(2 * TEST_REFRESH)
    old = client.get(old_key)
    time.sleep(2 * TEST_REFRESH)
    assert client.get(old_key) == old
    assert (
        0
        < client.pttl(old_key)
        < 1000
        * (float(service_env["PREDICTION_TTL_SECONDS"]) + float(service_env["STALE_GRACE_SECONDS"]))
    )


def test_a_rollout_that_cannot_compute_every_pair_flips_nothing(
    start: ProcessFactory, redis_server: RedisServer, service_env: dict[str, str]
) -> None:
    start("worker")
    start("beat")
    client = redis_server.client()
    wait_for(lambda: client.get(active_version_key()) == OLD.encode(), 30, what="the worker")
    env = {**service_env, "FAULTS": f"{PAIRS[1]}=raise"}
    done = _run_make("rollout", env, "MODEL=tests.harness.fault_models:PairFaultModel")
    assert done.returncode != 0
    assert "nothing flipped" in done.stderr and PAIRS[1] in done.stderr
    assert client.get(active_version_key()) == OLD.encode()


class GatedModel(CountingModel):
    """Holds each computation until the test lets it finish."""

    def __init__(self, gate: threading.Event) -> None:
        super().__init__()
        self.gate = gate

    def predict(self, pair: str, prices: object, horizon_seconds: int = 300) -> float:
        assert self.gate.wait(10)
        return super().predict(pair, prices, horizon_seconds)  # type: ignore[arg-type]


def test_two_writers_finishing_in_reverse_order_keep_the_newer_prediction(
    redis_server: RedisServer,
) -> None:
    store = PredictionStore(redis_server.client(), grace_seconds=60, clock=HostClock())
    first_gate, second_gate = threading.Event(), threading.Event()
    base = round(time.time(), 3)

    def writer(gate: threading.Event, computed_at: float) -> Callable[[], bool]:
        predictor = Predictor(
            GatedModel(gate), SyntheticMarketData(), 300, 60, clock=ManualClock(now=computed_at)
        )
        return lambda: store.write(predictor.compute("ETH-EUR"), time.time())

    older = writer(first_gate, base)  # computed first ...
    newer = writer(second_gate, base + 0.5)
    results: dict[str, bool] = {}
    slow = threading.Thread(target=lambda: results.update(older=older()))
    slow.start()
    second_gate.set()
    results["newer"] = newer()  # ... but the newer one finishes first
    first_gate.set()
    slow.join(10)
    assert results == {"newer": True, "older": False}
    stored = store.read_version("ETH-EUR", CountingModel.version)
    assert stored is not None and stored.computed_at == base + 0.5
