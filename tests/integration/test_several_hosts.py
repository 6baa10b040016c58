"""Several hosts, and partitions: Redis, two workers, two API servers and beat, each on
a host of its own (a Linux network namespace, tests/harness/netns.py), all real processes.

Shown: the two workers share the refreshes; cutting one worker's link changes nothing
a client sees; cutting one API from Redis (silently: its packets vanish) makes that
API answer stale or 503 within a second while the other is unaffected; healing both
restores everything, with no process restarted; and a pair added with the pairs
command on a host of its own is known to every API process on both API hosts, and
refreshed by a worker, within 2 s (issue #19). The test's own client is a host on
the same bridge (its threads enter that namespace), so every address used is inside
the namespaces this test creates, and removes, even on failure.

Root only (CI runs as root): without it this skips with the reason, unless
REQUIRE_NETNS_TEST=1 (as CI sets) turns the skip into a failure.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import orjson
import pytest
import redis
import urllib3

from predictions.infra.keys import prediction_key
from predictions.model.prediction import parse_time
from scripts.embedded_redis import server_args
from tests.harness.http import Answer, WorkerConnection, computations, connection_to_each_worker
from tests.harness.netns import Network, enter_namespace, netns_unavailable
from tests.harness.processes import BIN, Process, pairs_argv, run_pairs, until, wait_for
from tests.harness.system import PAIRS, TEST_VERSION

# Seven hosts' processes at once, and a 2 s answer bound: run alone (`make test`'s
# serial pass).
pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.serial]

T = TypeVar("T")
ANSWER_WITHIN = 2.0
# Answers from each API before the first fault (the sampler asks ~20 times a second).
WARM_ANSWERS = 40
API_PORT = 8000
REDIS_PORT = 6379


@dataclass(frozen=True)
class Sample:
    api: str
    sent: float  # time.monotonic()
    status: int | None
    cache: str | None
    seconds: float


class Hosts:
    """The system spread over namespaces, and a client on the same bridge."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.net = Network()
        self.processes: dict[str, Process] = {}
        self.client: ThreadPoolExecutor | None = None

    def start(self) -> Hosts:
        self.net.start()
        for host in ("redis", "worker1", "worker2", "api1", "api2", "beat", "client", "admin"):
            self.net.add_host(host)
        self.client = ThreadPoolExecutor(
            max_workers=4, initializer=enter_namespace, initargs=(self.net.namespace("client"),)
        )
        redis_ip = self.net.hosts["redis"]
        # Listening beyond loopback, on the bridge only; protected mode would refuse
        # clients from other addresses without a password.
        argv = server_args(REDIS_PORT, self.log_dir / "redis-data", "--bind", redis_ip,
                           "--protected-mode", "no", "--save", "")  # fmt: skip
        self._run("redis", argv)
        wait_for(lambda: self.call(lambda: self.redis().ping()), 15, what="redis on the bridge")
        self.env["REDIS_URL"] = f"redis://{redis_ip}:{REDIS_PORT}/0"
        for name in ("worker1", "worker2"):
            self._run(name, [str(BIN / "celery"), "-A", "worker", "worker", "--loglevel=INFO",
                             "-n", f"{name}@%h"], WORKER_CONCURRENCY="2")  # fmt: skip
        self._run("beat", [str(BIN / "celery"), "-A", "worker", "beat", "--loglevel=INFO"])
        for name in ("api1", "api2"):
            bind = f"{self.net.hosts[name]}:{API_PORT}"
            self._run(name, [str(BIN / "gunicorn"), "api.wsgi:app"], API_BIND=bind)
            wait_for(functools.partial(self.healthy, name), 30, what=f"{name} up")
        return self

    def _run(self, host: str, argv: list[str], **env: str) -> None:
        process = Process(host, self.net.argv(host, argv), {**self.env, **env}, self.log_dir)
        self.processes[host] = process.start()

    def call(self, fn: Callable[[], T]) -> T:
        """Run fn on a client thread, inside the client's namespace."""
        assert self.client is not None
        return self.client.submit(fn).result(timeout=30)

    def healthy(self, api: str) -> bool:
        return self.call(lambda: self.get(api, "/healthz")[0] == 200)

    def redis(self) -> redis.Redis:
        return redis.Redis(self.net.hosts["redis"], REDIS_PORT, socket_timeout=2,
                           socket_connect_timeout=2)  # fmt: skip

    def get(self, api: str, path: str) -> tuple[int, dict[str, str]]:
        url = f"http://{self.net.hosts[api]}:{API_PORT}{path}"
        response = urllib3.request("GET", url, timeout=5, retries=False)
        return response.status, dict(response.headers)

    def computed_at(self, pair: str) -> float:
        raw = self.redis().get(prediction_key(pair, TEST_VERSION))
        return 0.0 if raw is None else parse_time(orjson.loads(raw)["computed_at"], pair)

    def stop(self) -> None:
        try:
            for process in reversed(self.processes.values()):
                process.stop()
            if self.client is not None:
                self.client.shutdown(wait=True, cancel_futures=True)
        finally:
            self.net.close()


class Sampler:
    """Each API asked for every pair in turn, about 20 times a second each, from the
    client's namespace, until stopped (or max_seconds)."""

    def __init__(self, hosts: Hosts, max_seconds: float = 120) -> None:
        self.hosts = hosts
        self.max_seconds = max_seconds
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._futures: list[object] = []

    def __enter__(self) -> Sampler:
        assert self.hosts.client is not None
        for api in ("api1", "api2"):
            self._futures.append(self.hosts.client.submit(self._run, api))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for future in self._futures:
            future.result(timeout=30)  # type: ignore[attr-defined]

    def _run(self, api: str) -> None:
        http = urllib3.PoolManager(maxsize=2, retries=False, timeout=urllib3.Timeout(total=5))
        base = f"http://{self.hosts.net.hosts[api]}:{API_PORT}"
        ends = time.monotonic() + self.max_seconds
        count = 0
        while not self._stop.wait(0.05) and time.monotonic() < ends:
            pair = PAIRS[count % len(PAIRS)]
            count += 1
            sent = time.monotonic()
            try:
                response = http.request("GET", f"{base}/predict/{pair}")
                status, cache = response.status, response.headers.get("X-Cache")
            except urllib3.exceptions.HTTPError:
                status, cache = None, None
            sample = Sample(api, sent, status, cache, time.monotonic() - sent)
            with self._lock:
                self.samples.append(sample)

    def of(self, api: str, since: float, until: float = float("inf")) -> list[Sample]:
        with self._lock:
            return [s for s in self.samples if s.api == api and since <= s.sent < until]


@pytest.fixture
def hosts(service_env: dict[str, str], tmp_path: Path) -> Iterator[Hosts]:
    reason = netns_unavailable()
    if reason:
        if os.environ.get("REQUIRE_NETNS_TEST") == "1":
            pytest.fail(f"REQUIRE_NETNS_TEST=1 but {reason}")
        pytest.skip(reason)
    env = {**service_env, "WORKER_METRICS_BIND": "off"}
    system = Hosts(env, tmp_path)
    try:
        yield system.start()
    finally:
        system.stop()
        assert not system.net.leftovers(), "namespaces left behind"


def fresh(samples: list[Sample]) -> bool:
    return all(s.status == 200 and s.cache in ("HIT", "MISS") for s in samples)


def test_hosts_share_refreshes_and_survive_partitions(hosts: Hosts) -> None:
    workers = [hosts.processes["worker1"], hosts.processes["worker2"]]
    wait_for(
        lambda: hosts.call(lambda: all(hosts.computed_at(p) for p in PAIRS)),
        60,
        what="every pair cached",
    )

    def done(worker: Process) -> int:
        return sum(computations(worker, pair) for pair in PAIRS)

    # Both workers share the refreshes.
    wait_for(lambda: all(done(w) > 0 for w in workers), 30, what="both workers refreshing")
    with Sampler(hosts) as sampler:
        # Some answers from both APIs first (about 3 s of them on a quiet machine).
        wait_for(
            lambda: all(len(sampler.of(api, 0)) >= WARM_ANSWERS for api in ("api1", "api2")),
            60,
            what=f"{WARM_ANSWERS} answers from each API",
        )
        warm = time.monotonic()
        assert fresh(sampler.of("api1", 0) + sampler.of("api2", 0))

        # One worker cut off: the other carries every refresh; clients see no change.
        hosts.net.cut_link("worker1")
        cut = time.monotonic()
        before = done(workers[1])
        # Cut for at least the 6 s it always was, and until worker2 has taken over
        # (three rounds of every pair), however long that takes on this machine.
        time.sleep(6)
        wait_for(
            lambda: done(workers[1]) - before >= len(PAIRS) * 3,
            60,
            what="worker2 taking over every refresh",
        )
        hosts.net.restore_link("worker1")
        healed_worker = time.monotonic()
        during = sampler.of("api1", cut, healed_worker) + sampler.of("api2", cut, healed_worker)
        assert during and fresh(during), {(s.status, s.cache) for s in during}
        assert done(workers[1]) - before >= len(PAIRS) * 3, "worker2 did not take over"

        # One API cut off from Redis (silently): stale or 503 within a second; the
        # other API unaffected.
        time.sleep(1)
        hosts.net.blackhole("api1", "redis")
        partition = time.monotonic()
        # The partition's stated 5 s, and as long as it takes for a few answers from
        # each API past its first second.
        time.sleep(5)
        wait_for(
            lambda: all(len(sampler.of(api, partition + 1)) >= 10 for api in ("api1", "api2")),
            60,
            what="answers from both APIs during the partition",
        )
        hosts.net.heal("api1", "redis")
        healed_api = time.monotonic()
        cut_off = sampler.of("api1", partition + 1, healed_api)
        assert cut_off and all(
            s.status == 503 or (s.status == 200 and s.cache == "STALE") for s in cut_off
        ), {(s.status, s.cache) for s in cut_off}
        other = sampler.of("api2", partition, healed_api)
        assert other and fresh(other), {(s.status, s.cache) for s in other}

        # Healing restores everything, without restarts.
        wait_for(
            lambda: [s.cache for s in sampler.of("api1", time.monotonic() - 1)][-3:] == ["HIT"] * 3,
            15,
            what="api1 serving hits again",
        )
        restored = time.monotonic()
        recovered = done(workers[0])
        wait_for(lambda: done(workers[0]) > recovered, 45, what="worker1 refreshing again")
    added_from_another_host(hosts)
    every = sampler.samples
    assert all(s.status is not None and s.seconds < ANSWER_WITHIN for s in every), max(
        s.seconds for s in every
    )
    for name, process in hosts.processes.items():
        assert process.running(), f"{name} exited: {process.output()[-2000:]}"
    for api in ("api1", "api2"):
        assert hosts.processes[api].count("Booting worker") == 2, f"{api} restarted a worker"
    print(
        f"answers {len(every)}; api1 back to HITs {restored - healed_api:.1f} s after the "
        f"heal; worker link cut {healed_worker - cut:.1f} s, warm {warm:.0f}"
    )


def added_from_another_host(hosts: Hosts) -> None:
    """A pair added with the pairs command on the admin host: within 2 s, every API
    process on both API hosts knows it and a worker stored its prediction."""
    pair = "SOL-EUR"
    pinned: dict[int, WorkerConnection] = {}
    for api in ("api1", "api2"):
        found = hosts.call(functools.partial(connection_to_each_worker, hosts.processes[api]))
        assert len(found) == 2, api
        pinned.update(found)

    def ask(connection: WorkerConnection, path: str) -> Answer:
        return hosts.call(functools.partial(connection.get, path))

    try:
        for connection in pinned.values():
            assert ask(connection, f"/predict/{pair}").status == 404
        added = run_pairs(hosts.env, argv=hosts.net.argv("admin", pairs_argv("add", pair)))
        done = time.monotonic()
        assert (added.returncode, added.stderr) == (0, ""), added.stderr
        knows: dict[int, float] = {}
        landed: list[float] = []

        def everywhere() -> bool:
            # The batch endpoint answers from the cache and never computes: the only
            # computation of the pair can be a worker's.
            for pid, connection in pinned.items():
                if pid in knows:
                    continue
                item = ask(connection, f"/predict?pairs={pair}").body["items"][0]
                if item["status"] != "error":
                    knows[pid] = time.monotonic() - done
            if not landed and hosts.call(functools.partial(hosts.computed_at, pair)):
                landed.append(time.monotonic() - done)
            return len(knows) == len(pinned) and bool(landed)

        assert until(everywhere, ANSWER_WITHIN - (time.monotonic() - done)), (
            f"not within {ANSWER_WITHIN:g} s: {pair} known to {sorted(knows)} of "
            f"{sorted(pinned)}, stored: {bool(landed)}"
        )
        for connection in pinned.values():
            answer = ask(connection, f"/predict/{pair}")
            assert (answer.status, answer.headers["X-Cache"]) == (200, "HIT"), answer.body
        workers = ("worker1", "worker2")
        assert sum(computations(hosts.processes[name], pair) for name in workers) >= 1
        assert sum(computations(hosts.processes[name], pair) for name in ("api1", "api2")) == 0
        known = ", ".join(f"{pid}: {elapsed:.3f} s" for pid, elapsed in knows.items())
        print(f"{pair} known to each API process after {known}; stored after {landed[0]:.2f} s")
    finally:
        for connection in pinned.values():
            connection.close()
