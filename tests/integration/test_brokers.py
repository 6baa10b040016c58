"""Celery's broker is not Redis's to choose: the worker and beat on RabbitMQ, and on a
Redis that offers only database 0 (as some managed ones do).

RabbitMQ is a Debian package (`make rabbitmq`); without it the RabbitMQ test skips with
the reason, unless REQUIRE_RABBITMQ_TEST=1 (as CI sets) turns the skip into a failure.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.harness.processes import (
    Process,
    ProcessFactory,
    RabbitMQServer,
    RedisServer,
    find_rabbitmq_server,
    wait_for,
)
from tests.harness.store import computed_at
from tests.harness.system import PAIRS, TEST_REFRESH

pytestmark = pytest.mark.integration

# Refreshes each pair must show, one interval (TEST_REFRESH) apart at best.
REFRESHES = 4


@pytest.fixture(scope="module")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQServer]:
    script = find_rabbitmq_server()
    if script is None:
        reason = "rabbitmq-server is not installed (make rabbitmq)"
        if os.environ.get("REQUIRE_RABBITMQ_TEST") == "1":
            pytest.fail(f"REQUIRE_RABBITMQ_TEST=1 but {reason}")
        pytest.skip(reason)
    base = tmp_path_factory.mktemp("rabbitmq")
    server = RabbitMQServer(base, base)
    try:
        yield server.start(script)
    finally:
        server.stop()


def watch_refreshes(client: redis.Redis, refreshes: int, seconds: float) -> dict[str, set[str]]:
    """Every computed_at each pair's key held, polled until every pair has shown
    ``refreshes`` of them or ``seconds`` have passed."""
    seen: dict[str, set[str]] = {pair: set() for pair in PAIRS}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for pair in PAIRS:
            value = computed_at(client, pair)
            if value is not None:
                seen[pair].add(value)
        if all(len(values) >= refreshes for values in seen.values()):
            break
        time.sleep(0.05)
    return seen


def assert_every_pair_refreshed(client: redis.Redis, *processes: Process) -> None:
    wait_for(
        lambda: all(computed_at(client, pair) for pair in PAIRS),
        60,
        what="every pair written by the worker",
    )
    # REFRESHES writes need REFRESHES - 1 intervals; polled until they are seen, within
    # a bound far past that for a loaded machine (it was twice that plus 4 s, fixed).
    seen = watch_refreshes(client, REFRESHES, 10 * REFRESHES * TEST_REFRESH + 20)
    assert all(len(values) >= REFRESHES for values in seen.values()), seen
    for process in processes:
        assert process.running(), process.output()[-2000:]


@pytest.mark.serial  # an Erlang node is heavy to boot beside others: alone, last
def test_worker_and_beat_on_rabbitmq_refresh_every_pair(
    start: ProcessFactory, redis_server: RedisServer, rabbitmq: RabbitMQServer
) -> None:
    worker = start("worker", CELERY_BROKER_URL=rabbitmq.url)
    beat = start("beat", CELERY_BROKER_URL=rabbitmq.url)
    # The API never looks at the broker: the same environment serves it.
    api = start("api", CELERY_BROKER_URL=rabbitmq.url)
    assert_every_pair_refreshed(redis_server.client(), worker, beat, api)
    assert f"amqp://guest:**@127.0.0.1:{rabbitmq.port}" in worker.output()
    # The tasks went through RabbitMQ: Redis holds no queue, in any database.
    for db in (0, 1):
        keys = redis_server.client(db).keys("*")
        assert not [k for k in keys if b"celery" in k or b"kombu" in k], keys


def test_broker_in_the_only_database_of_a_managed_redis(
    start: ProcessFactory, tmp_path: Path
) -> None:
    # A server with one database, like a managed Redis: SELECT 1 is refused.
    server = RedisServer(tmp_path / "data", tmp_path)
    server.extra_args = ("--databases", "1")
    server.start()
    try:
        with pytest.raises(redis.ResponseError):
            server.client(db=1).ping()
        env = {"REDIS_URL": server.url, "CELERY_BROKER_DATABASE": "same"}
        worker = start("worker", **env)
        beat = start("beat", **env)
        client = server.client()
        assert_every_pair_refreshed(client, worker, beat)
        # The queues live beside the predictions, under their own prefix.
        assert client.keys("celery:*")
        keys: list[bytes] = client.keys("*")  # type: ignore[assignment]  # bytes: not decoded
        assert not [k for k in keys if k.startswith((b"_kombu", b"unacked"))]
    finally:
        server.stop()
