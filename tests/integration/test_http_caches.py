"""The HTTP caches users put in front of the API, each in front of a real gunicorn.

Client-side: hishel (its RFC 9111 mode, with httpx), requests-cache (``cache_control=
True``, without which it ignores the headers) and CacheControl, each as its docs set it
up; shared: Varnish with its builtin VCL and a one-line backend (``-b``). And a client
with no cache, to compare. Each asks for its own pair, so that one's requests never
refresh another's prediction, all at once against one API.

What must hold for every cache, with refreshes running (worker and beat), with them
stopped (the API recomputes on its own), and with the model failing (stale through the
whole grace, then nothing):

- no answer unmarked (without ``"stale": true``) later than 0.5 s past its fresh_until;
- no answer at all past fresh_until + grace;
- the API sees a small fraction of the requests (gunicorn's access log, per pair).

Times are taken just before each request is sent: whatever a cache answers, it decided
after that, so an answer that is late by this measure was late (a loaded machine can
only make the measure kinder, never flag an answer that was in time).
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import hishel
import hishel.httpx
import orjson
import pytest
import requests
import requests_cache
import urllib3
from cachecontrol import CacheControl

from tests.harness.ports import free_port
from tests.harness.processes import Process, ProcessFactory, wait_for

pytestmark = pytest.mark.integration

# One pair per client: their timelines never mix.
CLIENT_PAIRS = {
    "none": "ETH-EUR",
    "hishel": "BTC-EUR",
    "requests-cache": "ETH-USD",
    "cachecontrol": "BTC-USD",
    "varnish": "LTC-EUR",
}
TTL = 4
GRACE = 4
# Each client asks about 20 times a second.
INTERVAL = 0.05
# What the issue allows: a fresh body a little late, from a cache that refetches.
FRESH_SLACK = 0.5
TIMEOUT = 10  # every request, through any cache
# The access log: one line per request reaching the API, with the API's X-Cache and
# Cache-Control.
ACCESS_FORMAT = "access %(m)s %(U)s %(s)s %({x-cache}o)s %({cache-control}o)s"
# A stale answer a cache may reuse: a whole second of grace or more was left.
REUSABLE = "max-age=1,.*"


def find_varnishd() -> str | None:
    """varnishd: on PATH, or where Debian puts it (/usr/sbin, not on every PATH)."""
    found = shutil.which("varnishd")
    if found:
        return found
    fallback = Path("/usr/sbin/varnishd")
    return str(fallback) if os.access(fallback, os.X_OK) else None


@dataclass
class Seen:
    sent: float  # time.time() just before the request
    status: int
    body: dict[str, Any]

    @property
    def fresh_until(self) -> float:
        return datetime.fromisoformat(self.body["fresh_until"]).timestamp()

    @property
    def stale(self) -> bool:
        return self.body.get("stale") is True


@dataclass
class Client:
    """One way of asking for one pair: a cache in front of the API, or none."""

    name: str
    pair: str
    fetch: Callable[[str], tuple[int, bytes]]
    seen: list[Seen] = field(default_factory=list)

    def ask(self) -> Seen:
        sent = time.time()
        status, data = self.fetch(f"/predict/{self.pair}")
        seen = Seen(sent, status, orjson.loads(data) if data else {})
        self.seen.append(seen)
        return seen


Fetcher = tuple[Callable[[str], tuple[int, bytes]], Callable[[], None]]


def urllib3_fetcher(base: str) -> Fetcher:
    pool = urllib3.PoolManager(maxsize=2, retries=False, timeout=urllib3.Timeout(total=TIMEOUT))

    def fetch(path: str) -> tuple[int, bytes]:
        response = pool.request("GET", base + path)
        return response.status, response.data

    return fetch, pool.clear


def requests_fetcher(session: requests.Session, base: str) -> Fetcher:
    session.trust_env = False  # no proxy from the environment

    def fetch(path: str) -> tuple[int, bytes]:
        response = session.get(base + path, timeout=TIMEOUT)
        return response.status_code, response.content

    return fetch, session.close


def hishel_fetcher(base: str, database: Path) -> Fetcher:
    connection = sqlite3.connect(database, check_same_thread=False)
    storage = hishel.SqliteStorage(connection=connection)
    client = hishel.httpx.CacheClient(storage=storage, rfc=True, timeout=TIMEOUT, trust_env=False)

    def fetch(path: str) -> tuple[int, bytes]:
        response = client.get(base + path)
        return response.status_code, response.content

    def close() -> None:
        client.close()
        connection.close()

    return fetch, close


@dataclass
class Setup:
    api: Process
    clients: list[Client]
    env: dict[str, str]

    def api_requests(self, pair: str, x_cache: str = r"\S+", cache_control: str = ".*") -> int:
        """Requests for the pair that reached the API (by its access log)."""
        pattern = re.compile(rf"^access GET /predict/{pair} \d+ {x_cache} {cache_control}$")
        # gunicorn's lines are JSON objects under LOG_FORMAT=json: the line is the message.
        lines = (
            orjson.loads(line).get("message", "") if line.startswith("{") else line
            for line in self.api.output().splitlines()
        )
        return sum(1 for line in lines if pattern.match(line))

    def drive(self, seconds: float) -> None:
        """Every client asks for its pair every INTERVAL for ``seconds``, all at once."""
        deadline = time.monotonic() + seconds
        limit = int(seconds / INTERVAL) + 1  # bounded in count as well as in time

        def run(client: Client) -> None:
            for _ in range(limit):
                if time.monotonic() >= deadline:
                    return
                client.ask()
                time.sleep(INTERVAL)

        with ThreadPoolExecutor(len(self.clients)) as pool:
            for future in [pool.submit(run, client) for client in self.clients]:
                future.result()


VARNISH_MISSING = "Varnish is not installed (`make varnish` installs it with apt-get, as root)"


def varnish_or_skip() -> str | None:
    """varnishd, or None (REQUIRE_VARNISH_TEST=1: fail instead)."""
    varnishd = find_varnishd()
    if varnishd is None and os.environ.get("REQUIRE_VARNISH_TEST") == "1":
        pytest.fail(f"REQUIRE_VARNISH_TEST=1 but {VARNISH_MISSING}")
    return varnishd


def test_varnish_is_installed() -> None:
    """Without Varnish the tests below run the client-side caches only: say so."""
    varnishd = varnish_or_skip()
    if varnishd is None:
        pytest.skip(f"{VARNISH_MISSING}: the tests below leave it out")
    version = subprocess.run([varnishd, "-V"], capture_output=True, text=True, timeout=30)
    # docs/http-caching.md describes Varnish 7's builtin VCL.
    assert re.search(r"varnish-7\.", version.stdout + version.stderr), version


def start_varnish(varnishd: str, backend: str, tmp_path: Path) -> tuple[Process, str]:
    """The builtin VCL with a one-line backend, as `varnishd -b` gives it; in the
    foreground as the current user, its state in a temporary directory."""
    listen = f"127.0.0.1:{free_port()}"
    argv = [
        varnishd, "-F", "-j", "none", "-n", str(tmp_path / "varnish"), "-T", "none",
        "-a", listen, "-b", backend, "-s", "malloc,32m",
        "-p", "connect_timeout=2", "-p", f"first_byte_timeout={TIMEOUT}",
        "-p", f"between_bytes_timeout={TIMEOUT}",
    ]  # fmt: skip
    varnish = Process("varnish", argv, os.environ, tmp_path).start()
    url = f"http://{listen}"

    def answers() -> bool:
        if not varnish.running():
            pytest.fail(f"varnishd exited:\n{varnish.output()}")
        health = urllib3.request("GET", f"{url}/healthz", timeout=2, retries=False)
        return health.status == 200

    try:
        wait_for(answers, 60, what=f"varnishd on {listen}")
    except BaseException:
        varnish.stop()
        raise
    return varnish, url


@pytest.fixture
def setup(start: ProcessFactory, tmp_path: Path) -> Iterator[Setup]:
    """The API (access log on), Varnish in front of it, and a client per cache."""
    env = {
        "PAIRS": ",".join(CLIENT_PAIRS.values()),
        "PREDICTION_TTL_SECONDS": str(TTL),
        "STALE_GRACE_SECONDS": str(GRACE),
        # A model that fails while this file exists, in every process.
        "MODEL": "tests.harness.fault_models:SwitchedFaultModel",
        "FAULT_FILE": str(tmp_path / "model-fails"),
        "WORKER_METRICS_BIND": "off",
    }
    api = start(
        "api",
        **env,
        GUNICORN_CMD_ARGS=f"--access-logfile - --access-logformat '{ACCESS_FORMAT}'",
    )
    api_url = f"http://{api.env['API_BIND']}"
    fetchers = {
        "none": urllib3_fetcher(api_url),
        "hishel": hishel_fetcher(api_url, tmp_path / "hishel.sqlite"),
        "requests-cache": requests_fetcher(
            requests_cache.CachedSession(backend="memory", cache_control=True), api_url
        ),
        "cachecontrol": requests_fetcher(CacheControl(requests.Session()), api_url),
    }
    varnish = None
    try:
        varnishd = varnish_or_skip()
        if varnishd is not None:
            varnish, varnish_url = start_varnish(varnishd, api.env["API_BIND"], tmp_path)
            fetchers["varnish"] = urllib3_fetcher(varnish_url)
        clients = [Client(name, CLIENT_PAIRS[name], fetchers[name][0]) for name in fetchers]
        yield Setup(api, clients, env)
    finally:
        for _, close in fetchers.values():
            close()
        if varnish is not None:
            varnish.stop()


@dataclass
class Phase:
    """What each client saw in one period, and how many requests reached the API."""

    answers: dict[str, list[Seen]]
    reached: dict[str, int]
    reached_stale: dict[str, int]
    reached_reusable: dict[str, int]  # stale answers with a second of grace left or more


def run_phase(setup: Setup, seconds: float) -> Phase:
    pairs = [client.pair for client in setup.clients]
    before = {pair: setup.api_requests(pair) for pair in pairs}
    stale_before = {pair: setup.api_requests(pair, "STALE") for pair in pairs}
    reusable_before = {pair: setup.api_requests(pair, "STALE", REUSABLE) for pair in pairs}
    counts = {client.name: len(client.seen) for client in setup.clients}
    setup.drive(seconds)
    answers = {client.name: client.seen[counts[client.name] :] for client in setup.clients}
    # gunicorn logs a request just after answering it: every direct request is logged.
    direct = next(client for client in setup.clients if client.name == "none")
    wait_for(
        lambda: setup.api_requests(direct.pair) - before[direct.pair] >= len(answers["none"]),
        5,
        what="the API's access log",
    )
    time.sleep(0.2)  # and a background refresh by Varnish, if one was under way
    return Phase(
        answers,
        {c.name: setup.api_requests(c.pair) - before[c.pair] for c in setup.clients},
        {c.name: setup.api_requests(c.pair, "STALE") - stale_before[c.pair] for c in setup.clients},
        {
            c.name: setup.api_requests(c.pair, "STALE", REUSABLE) - reusable_before[c.pair]
            for c in setup.clients
        },
    )


def late_answers(phase: Phase) -> list[str]:
    """Every answer served past what the API itself would serve, described."""
    late = []
    for name, answers in phase.answers.items():
        for seen in answers:
            if seen.status != 200:
                continue
            past = seen.sent - seen.fresh_until
            if not seen.stale and past > FRESH_SLACK:
                late.append(f"{name}: unmarked, {past:.3f} s past fresh_until")
            if past > GRACE:
                late.append(f"{name}: {past - GRACE:.3f} s past the grace")
    return late


def errors(phase: Phase) -> list[tuple[str, int, dict[str, Any]]]:
    return [
        (name, seen.status, seen.body)
        for name, answers in phase.answers.items()
        for seen in answers
        if seen.status != 200
    ]


def summary(phase: Phase) -> str:
    lines = [
        f"{'cache':<15} {'asked':>6} {'reached API':>12} {'stale answers':>14} "
        f"{'by the API':>11} {'reusable':>9}"
    ]
    for name, answers in phase.answers.items():
        stale = sum(1 for seen in answers if seen.status == 200 and seen.stale)
        lines.append(
            f"{name:<15} {len(answers):>6} {phase.reached[name]:>12} {stale:>14} "
            f"{phase.reached_stale[name]:>11} {phase.reached_reusable[name]:>9}"
        )
    return "\n".join(lines)


def check_caches_cache(phase: Phase, share: float) -> None:
    for name, answers in phase.answers.items():
        assert answers, f"{name} answered nothing"
        if name == "none":
            assert phase.reached[name] == len(answers), "the access log misses requests"
            continue
        assert phase.reached[name] <= share * len(answers), (
            f"{name}: {phase.reached[name]} of {len(answers)} requests reached the API\n"
            + summary(phase)
        )


def test_caches_serve_nothing_past_freshness_with_refreshes_running_then_stopped(
    setup: Setup, start: ProcessFactory
) -> None:
    worker = start("worker", **setup.env)
    beat = start("beat", **setup.env)
    pairs_url = f"http://{setup.api.env['API_BIND']}/pairs"

    def all_cached() -> bool:
        listed = orjson.loads(urllib3.request("GET", pairs_url, timeout=2, retries=False).data)
        return all(item["cached"] for item in listed["pairs"])

    wait_for(all_cached, 30, what="every pair cached by the worker")

    # Refreshes running: every pair is recomputed each second, fresh for TTL.
    running = run_phase(setup, 2.5 * TTL)
    print("refreshes running\n" + summary(running))
    assert not late_answers(running), late_answers(running)[:10]
    assert not errors(running), errors(running)[:5]
    # A cache keeps a copy for the whole seconds of freshness left (2 or 3 s here)
    # at 20 requests a second: a few percent reach the API. Generous for a loaded
    # machine, far below the 100 % of no cache.
    check_caches_cache(running, share=0.2)

    # Refreshes stopped: predictions age to the end of their freshness; the API
    # recomputes a pair early (XFetch) or once stale (in the background) on its own.
    beat.stop()
    worker.stop()
    stopped = run_phase(setup, 3 * TTL)
    print("refreshes stopped\n" + summary(stopped))
    assert not late_answers(stopped), late_answers(stopped)[:10]
    assert not errors(stopped), errors(stopped)[:5]
    # Each prediction now ends its life in the cache: in its last second (max-age=0)
    # every request is a revalidation, until the API refreshes it early.
    check_caches_cache(stopped, share=0.4)


def test_while_pairs_are_stale_caches_shield_the_api_and_stop_at_the_grace(
    setup: Setup,
) -> None:
    # A prediction of every pair, then the model fails: nothing can refresh them.
    for client in setup.clients:
        assert client.ask().status == 200
    Path(setup.env["FAULT_FILE"]).touch()
    failing = run_phase(setup, TTL + GRACE + 2)
    print("model failing\n" + summary(failing))
    assert not late_answers(failing), late_answers(failing)[:10]

    for name, answers in failing.answers.items():
        statuses = [seen.status for seen in answers]
        # Fresh, then stale through the grace, then nothing to serve (no-store 503s).
        assert set(statuses) <= {200, 503}, (name, set(statuses))
        assert any(seen.stale for seen in answers), f"{name} never saw the pair stale"
        assert statuses[-1] == 503, f"{name} still answered past the grace"
        first_error = statuses.index(503)
        assert set(statuses[first_error:]) == {503}, f"{name} served again after a 503"
        stale = sum(1 for seen in answers if seen.status == 200 and seen.stale)
        if name == "none":
            assert failing.reached_stale[name] == stale
            # Without a cache, every request while the pair is stale reaches the API.
            assert failing.reached_reusable[name] > 2 * GRACE, summary(failing)
        else:
            # Each cache reuses a stale answer for a second (max-age=1), then serves it
            # while it revalidates: about one request a second reaches the API while a
            # whole second of grace is left (twice that allowed), against twenty. In
            # the last second of the grace nothing may be cached: all reach the API.
            assert failing.reached_reusable[name] <= 2 * GRACE, (
                f"{name}: {failing.reached_reusable[name]} requests reached the API while "
                f"the pair was stale with a second of grace left\n" + summary(failing)
            )
