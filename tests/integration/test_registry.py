"""The pair registry (issue #19) against real processes: the pairs command run as a
user runs it, real redis-server, celery worker and beat, gunicorn from the shipped
gunicorn.conf.py.

Shown: a pair added or removed reaches every API process within 2 s, and the workers
refresh an added pair within 2 s without any request and never a removed one, whose
prediction then expires on its own; a pair's own TTL and refresh interval rule its
stored lifetime, its caching headers and how often the worker refreshes it; under
PRECOMPUTE=asked the worker keeps warm only the pairs clients ask for; and bad input
to the command changes nothing. The ACL and multi-host cases live beside their kind
(test_acl.py, test_several_hosts.py).
"""

from __future__ import annotations

import functools
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import redis

from predictions.infra.keys import (
    PREDICTION_PREFIX,
    asked_pairs_key,
    prediction_key,
    registry_state_key,
)
from predictions.model.prediction import parse_time
from tests.harness.http import WorkerConnection, computations, connection_to_each_worker, get
from tests.harness.processes import (
    Process,
    ProcessFactory,
    RedisServer,
    run_pairs,
    until,
    wait_for,
)
from tests.harness.store import cached, stored
from tests.harness.system import PAIRS, TEST_REFRESH, TEST_TTL, TEST_VERSION

pytestmark = pytest.mark.integration

# The bound on a change reaching every process.
WITHIN = 2.0
NEW_PAIR = "SOL-EUR"
# Longer than any pause between a test's requests on one kept-alive connection.
KEEP_ALIVE = "60"


@pytest.fixture
def pinned() -> Iterator[list[dict[int, WorkerConnection]]]:
    """Connections to each API worker process, closed after the test (before the
    processes stop: gunicorn waits for open connections)."""
    held: list[dict[int, WorkerConnection]] = []
    yield held
    for connections in held:
        for connection in connections.values():
            connection.close()


def pairs_listed(env: dict[str, str]) -> str:
    listed = run_pairs(env, "list", "--long")
    assert listed.returncode == 0, listed.stderr
    return listed.stdout


def lifetime(entry: dict[str, object] | None) -> float | None:
    """fresh_until - computed_at of a stored prediction, in seconds."""
    if entry is None:
        return None
    pair = str(entry["pair"])
    return round(parse_time(entry["fresh_until"], pair) - parse_time(entry["computed_at"], pair), 3)


def seconds(by_process: dict[int, float]) -> str:
    return ", ".join(f"{pid}: {elapsed:.3f} s" for pid, elapsed in by_process.items())


def answers(connection: WorkerConnection, path: str, status: int) -> bool:
    return connection.get(path).status == status


def known_to(connection: WorkerConnection, pair: str) -> bool:
    """Whether the process knows the pair, asked through the batch endpoint: it answers
    from the cache only and never computes."""
    item = connection.get(f"/predict?pairs={pair}").body["items"][0]
    return bool(item["status"] != "error")


def start_system(
    start: ProcessFactory, client: redis.Redis, **env: str
) -> tuple[Process, Process, Process]:
    """Worker, beat and an API of two processes, with the default pairs cached."""
    worker = start("worker", **env)
    beat = start("beat", **env)
    api = start("api", API_HEADER_TIMEOUT_SECONDS=KEEP_ALIVE, **env)
    wait_for(lambda: cached(client), 30, what="every pair cached by the worker")
    return worker, beat, api


# A bound of 2 s on the change reaching every process: run alone (`make test`'s serial pass).
@pytest.mark.serial
def test_an_added_pair_is_served_by_every_api_process_and_refreshed_within_2_s(
    start: ProcessFactory,
    redis_server: RedisServer,
    service_env: dict[str, str],
    pinned: list[dict[int, WorkerConnection]],
) -> None:
    client = redis_server.client()
    worker, beat, api = start_system(start, client)
    connections = connection_to_each_worker(api)
    pinned.append(connections)
    assert len(connections) == 2
    for connection in connections.values():
        assert connection.get(f"/predict/{NEW_PAIR}").status == 404

    added = run_pairs(service_env, "add", NEW_PAIR)
    done = time.monotonic()
    assert (added.returncode, added.stderr) == (0, ""), added.stderr
    assert added.stdout.strip() == f"1 added, 0 updated; {len(PAIRS) + 1} known pairs"

    # Both claims side by side, neither waiting for the other: each process's view,
    # through the batch endpoint (which never computes, so that the only computation
    # can be the worker's), and the prediction in Redis, which nothing asked for.
    knows: dict[int, float] = {}
    landed: list[float] = []

    def everywhere() -> bool:
        for pid, connection in connections.items():
            if pid not in knows and known_to(connection, NEW_PAIR):
                knows[pid] = time.monotonic() - done
        if not landed and client.exists(prediction_key(NEW_PAIR, TEST_VERSION)):
            landed.append(time.monotonic() - done)
        return len(knows) == len(connections) and bool(landed)

    assert until(everywhere, WITHIN - (time.monotonic() - done)), (
        f"not within {WITHIN:g} s: {NEW_PAIR} known to {sorted(knows)} of "
        f"{sorted(connections)}, stored: {bool(landed)}"
    )
    assert computations(worker, NEW_PAIR) >= 1
    assert computations(api, NEW_PAIR) == 0

    # Every process answers the pair itself, from the worker's prediction.
    for connection in connections.values():
        answer = connection.get(f"/predict/{NEW_PAIR}")
        assert (answer.status, answer.headers["X-Cache"]) == (200, "HIT"), answer.body
        assert answer.body["pair"] == NEW_PAIR
    # And the worker keeps it warm, as any other pair.
    first = computations(worker, NEW_PAIR)
    wait_for(lambda: computations(worker, NEW_PAIR) >= first + 2, 20, what="refreshed again")
    assert computations(api, NEW_PAIR) == 0
    assert "refreshing pairs just added pairs=1" in beat.output()
    print(f"known to each process after {seconds(knows)}; stored after {landed[0]:.2f} s")


# A bound of 2 s on the change reaching every process: run alone (`make test`'s serial pass).
@pytest.mark.serial
def test_a_removed_pair_is_refused_by_every_api_process_within_2_s_and_expires(
    start: ProcessFactory,
    redis_server: RedisServer,
    service_env: dict[str, str],
    pinned: list[dict[int, WorkerConnection]],
) -> None:
    client = redis_server.client()
    grace = 3  # short, so that the removed pair's prediction is seen to expire
    worker, _, api = start_system(start, client, STALE_GRACE_SECONDS=str(grace))
    env = {**service_env, "STALE_GRACE_SECONDS": str(grace)}
    assert run_pairs(env, "add", NEW_PAIR).returncode == 0
    wait_for(lambda: computations(worker, NEW_PAIR) >= 2, 20, what=f"{NEW_PAIR} refreshed")
    connections = connection_to_each_worker(api)
    pinned.append(connections)
    for connection in connections.values():
        served = functools.partial(answers, connection, f"/predict/{NEW_PAIR}", 200)
        assert until(served, 10), f"{NEW_PAIR} not served by API process {connection.pid}"

    before = computations(worker, NEW_PAIR)
    removed = run_pairs(env, "remove", NEW_PAIR)
    done = time.monotonic()
    assert (removed.returncode, removed.stderr) == (0, ""), removed.stderr
    assert removed.stdout.strip() == "1 removed; their predictions expire on their own"

    refused: dict[int, float] = {}

    def everywhere() -> bool:
        for pid, connection in connections.items():
            if pid not in refused:
                answer = connection.get(f"/predict/{NEW_PAIR}")
                if answer.status == 404:
                    assert answer.body["error"]["code"] == "unknown_pair"
                    refused[pid] = time.monotonic() - done
                else:
                    assert answer.status == 200, answer.body
        return len(refused) == len(connections)

    assert until(everywhere, WITHIN - (time.monotonic() - done)), (
        f"not within {WITHIN:g} s: 404 from {sorted(refused)} of {sorted(connections)}"
    )

    # Its prediction stays until its own expiry (PXAT), then goes on its own.
    key = prediction_key(NEW_PAIR, TEST_VERSION)
    assert 0 < client.pttl(key) <= (TEST_TTL + grace) * 1000
    last = stored(client, NEW_PAIR)
    assert last is not None
    others = computations(worker, "ETH-EUR")
    wait_for(lambda: not client.exists(key), TEST_TTL + grace + 10, what="the key expired")
    # Meanwhile the worker refreshed the other pairs, interval after interval, but never
    # this one again: at most one refresh was already under way when it was removed.
    assert computations(worker, "ETH-EUR") >= others + 3
    assert computations(worker, NEW_PAIR) <= before + 1
    assert computations(api, NEW_PAIR) == 0
    for connection in connections.values():
        assert connection.get(f"/predict/{NEW_PAIR}").status == 404
    assert client.get(key) is None
    print(f"refused by each process after {seconds(refused)}; last computed {last['computed_at']}")


def test_a_pair_with_its_own_freshness_is_stored_served_and_refreshed_by_it(
    start: ProcessFactory, redis_server: RedisServer, service_env: dict[str, str]
) -> None:
    # The suite's settings: TTL 4 s, refreshed every second; BTC-EUR gets 30 s and 10 s.
    ttl, every = 30, 10
    client = redis_server.client()
    worker, _, api = start_system(start, client)
    assert lifetime(stored(client, "BTC-EUR")) == TEST_TTL
    changed = run_pairs(service_env, "add", "BTC-EUR", "--ttl", str(ttl), "--refresh", str(every))
    assert (changed.returncode, changed.stderr) == (0, ""), changed.stderr
    assert changed.stdout.strip() == f"0 added, 1 updated; {len(PAIRS)} known pairs"
    assert f"BTC-EUR  ttl={ttl}  refresh={every}\n" in pairs_listed(service_env)

    wait_for(lambda: lifetime(stored(client, "BTC-EUR")) == ttl, 15, what="a 30 s prediction")
    # From here, every write of BTC-EUR the sampling sees, and of ETH-EUR (the settings').
    seen: dict[str, list[dict[str, object]]] = {"BTC-EUR": [], "ETH-EUR": []}
    started = computations(worker, "BTC-EUR")

    def sample() -> bool:
        for pair, writes in seen.items():
            entry = stored(client, pair)
            if entry is not None and (
                not writes or entry["computed_at"] != writes[-1]["computed_at"]
            ):
                writes.append(entry)
        return len(seen["BTC-EUR"]) >= 3  # the first 30 s write, then two refreshes

    # Two more refreshes at 10 s: about 20 s, at most 30 s (slot boundaries).
    wait_for(sample, 45, interval=0.1, what="BTC-EUR refreshed twice on its own interval")

    btc = seen["BTC-EUR"]
    assert [lifetime(entry) for entry in btc] == [ttl] * len(btc)
    times = [parse_time(entry["computed_at"], "BTC-EUR") for entry in btc]
    gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
    # The first refresh comes at the next 10 s boundary (however soon), then one every
    # 10 s: never at the settings' every second.
    assert gaps[-1] > every / 2, gaps
    assert computations(worker, "BTC-EUR") - started <= len(btc) + 1
    # The other pairs kept the settings': a 4 s lifetime, refreshed every second.
    eth = seen["ETH-EUR"]
    assert {lifetime(entry) for entry in eth} == {TEST_TTL}
    assert len(eth) >= 2 * len(btc), (len(eth), len(btc))

    # The answer's caching headers follow the pair's own lifetime.
    for _ in range(2):
        sent = time.time()
        answer = get(api, "/predict/BTC-EUR")
        received = time.time()
        assert (answer.status, answer.headers["X-Cache"]) == (200, "HIT")
        max_age = int(re.findall(r"max-age=(\d+)", answer.headers["Cache-Control"])[0])
        fresh_until = parse_time(answer.body["fresh_until"], "BTC-EUR")
        # Whole seconds of freshness left, by Redis's clock (this machine's, here): at
        # least the 20 s until the next refresh, more than the settings' TTL allows.
        assert TEST_TTL < max_age <= ttl
        assert fresh_until - received - 1 <= max_age <= fresh_until - sent + 1, (
            max_age, fresh_until - sent
        )  # fmt: skip
        time.sleep(1.5)
    eth_answer = get(api, "/predict/ETH-EUR")
    assert int(re.findall(r"max-age=(\d+)", eth_answer.headers["Cache-Control"])[0]) <= TEST_TTL
    assert computations(api, "BTC-EUR") == 0
    print(f"BTC-EUR writes {len(btc)}, gaps {[round(g, 2) for g in gaps]}; ETH-EUR {len(eth)}")


# Twenty pairs, none of them the defaults; clients ask for two.
REGISTERED = [f"{base}-EUR" for base in (
    "SOL", "ADA", "DOT", "XRP", "LTC", "LINK", "ATOM", "AVAX", "UNI", "XLM",
    "ALGO", "FIL", "NEAR", "AAVE", "ETC", "XTZ", "EOS", "MKR", "COMP", "SNX",
)]  # fmt: skip
ASKED = ["ADA-EUR", "LINK-EUR"]


def test_precompute_asked_refreshes_only_the_pairs_clients_ask_for(
    start: ProcessFactory, redis_server: RedisServer, service_env: dict[str, str], tmp_path: Path
) -> None:
    client = redis_server.client()
    env = {**service_env, "PRECOMPUTE": "asked"}
    listing = tmp_path / "pairs.txt"
    listing.write_text("# registered, asked or not\n" + "\n".join(REGISTERED) + "\n")
    loaded = run_pairs(env, "load", str(listing))
    assert (loaded.returncode, loaded.stderr) == (0, ""), loaded.stderr
    assert loaded.stdout.strip() == f"{len(REGISTERED)} known pairs: 20 added, 4 removed"
    worker = start("worker", PRECOMPUTE="asked")
    start("beat", PRECOMPUTE="asked")
    api = start("api", PRECOMPUTE="asked")

    def fanouts() -> int:
        lines = worker.output().splitlines()
        return sum(
            "Task predictions.refresh_all[" in line and "succeeded" in line for line in lines
        )

    # Intervals go by and beat sends its refreshes, yet nothing is computed: nobody asked.
    wait_for(lambda: fanouts() >= 3, 30, what="three refresh_all tasks run by the worker")
    assert client.keys(f"{PREDICTION_PREFIX}*") == []
    assert worker.count("computed prediction") == 0

    # A registered pair never asked has no prediction: its first request computes it.
    for pair in ASKED:
        answer = get(api, f"/predict/{pair}")
        assert (answer.status, answer.headers["X-Cache"]) == (200, "MISS"), answer.body
        assert computations(api, pair) == 1

    def ask(pairs: list[str], seconds: float) -> list[str]:
        outcomes = []
        ends = time.monotonic() + seconds
        while time.monotonic() < ends:
            for pair in pairs:
                answer = get(api, f"/predict/{pair}")
                outcomes.append(f"{answer.status} {answer.headers.get('X-Cache')}")
            time.sleep(0.25)
        return outcomes

    # Asked for over three TTLs: every answer a hit, kept warm by the worker alone.
    assert set(ask(ASKED, 3 * TEST_TTL)) == {"200 HIT"}
    for pair in ASKED:
        assert computations(worker, pair) >= 3, pair
        assert computations(api, pair) == 1, pair
    never = [pair for pair in REGISTERED if pair not in ASKED]
    for pair in never:
        assert computations(worker, pair) == 0, pair
        assert not client.exists(prediction_key(pair, TEST_VERSION)), pair
    members = cast(list[bytes], client.zrange(asked_pairs_key(), 0, -1))
    assert {member.decode() for member in members} == set(ASKED)

    # One no longer asked drops out of the refresh once its window (three TTLs since it
    # was last recorded, within a second of its last request) has gone by.
    kept, dropped = ASKED
    # (A refresh sent within the window and not started within its interval is dropped.)
    outcomes = ask([kept], 3 * TEST_TTL + 4 * TEST_REFRESH + 1)
    after_window = computations(worker, dropped)
    still = computations(worker, kept)
    outcomes += ask([kept], 4 * TEST_REFRESH)
    wait_for(lambda: computations(worker, kept) >= still + 3, 20, what=f"{kept} still refreshed")
    assert set(outcomes) == {"200 HIT"}
    assert computations(worker, dropped) == after_window
    assert computations(api, kept) == 1
    for pair in never:
        assert computations(worker, pair) == 0, pair
    print(f"worker computed {kept} {computations(worker, kept)}x, {dropped} {after_window}x")


def registry_state(client: redis.Redis) -> dict[bytes, bytes]:
    return client.hgetall(registry_state_key())  # type: ignore[return-value]


def refused(result: subprocess.CompletedProcess[str], *named: str) -> list[str]:
    """The lines of a refusal: exit 1, nothing on stdout, no traceback, each text named."""
    assert result.returncode == 1, result
    assert result.stdout == ""
    assert "Traceback" not in result.stderr, result.stderr
    for text in named:
        assert text in result.stderr, (text, result.stderr)
    return result.stderr.strip().splitlines()


BAD_FILE = """\
# a pair a line, then its TTL and refresh interval
ETH-EUR
ETHEUR
SOL-EUR 30 10

ADA-EUR 10 20
DOT-EUR 30 10 extra
XRP-EUR abc
"""


def test_bad_input_to_the_command_changes_nothing(
    redis_server: RedisServer, service_env: dict[str, str], tmp_path: Path
) -> None:
    client = redis_server.client()
    bad = tmp_path / "bad.txt"
    bad.write_text(BAD_FILE)
    # On a fresh cache, nothing at all is written (not even the registry seeded).
    [line] = refused(run_pairs(service_env, "add", "ETHEUR"), "'ETHEUR'")
    assert line.startswith("pairs add: ")
    refused(run_pairs(service_env, "load", str(bad)), "line 3:")
    assert client.dbsize() == 0

    assert run_pairs(service_env, "add", NEW_PAIR, "--ttl", "30", "--refresh", "10").returncode == 0
    listed, state = pairs_listed(service_env), registry_state(client)
    assert listed.splitlines()[-1] == f"{NEW_PAIR}  ttl=30  refresh=10"

    # One line each: a malformed pair (alone, or among good ones), a refresh not shorter
    # than its TTL, an unknown pair to remove (alone, or beside a known one).
    for args, named in [
        (("add", "ETHEUR"), "'ETHEUR' is not a currency pair"),
        (("add", "ADA-EUR", "ETH-EUR-USD"), "'ETH-EUR-USD' is not a currency pair"),
        (("add", "ADA-EUR", "--ttl", "10", "--refresh", "10"), "must be shorter than the TTL"),
        (("add", "ADA-EUR", "--ttl", "-1"), "ttl '-1'"),
        (("remove", "DOGE-EUR"), "not known pairs: DOGE-EUR; nothing was removed"),
        (("remove", NEW_PAIR, "DOGE-EUR"), "not known pairs: DOGE-EUR; nothing was removed"),
        (("load", str(tmp_path / "absent.txt")), "cannot read"),
    ]:
        [line] = refused(run_pairs(service_env, *args), named)
        assert line.startswith(f"pairs {args[0]}: "), line
        assert (pairs_listed(service_env), registry_state(client)) == (listed, state), args

    # A file's bad lines, each named by its number, and none of its good ones written.
    lines = refused(run_pairs(service_env, "load", str(bad)), "line 3:", "line 6:", "line 7:",
                    "line 8:")  # fmt: skip
    assert len(lines) == 4, lines
    assert not any(f"line {number}:" in "\n".join(lines) for number in (1, 2, 4, 5))
    assert (pairs_listed(service_env), registry_state(client)) == (listed, state)
    refused(run_pairs(service_env, "load", "--merge", str(bad)), "line 3:")
    assert (pairs_listed(service_env), registry_state(client)) == (listed, state)
