"""The API works as the documented least-privilege Redis user, and can do nothing else."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import urllib3

from predictions.infra.keys import prediction_key
from scripts.embedded_redis import server_args
from tests.harness.ports import free_port
from tests.harness.processes import ROOT, Process, ProcessFactory, wait_for
from tests.harness.system import TEST_VERSION

pytestmark = pytest.mark.integration

ACL_TEMPLATE = ROOT / "deploy" / "redis-api-user.acl"


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A redis-server whose users come from the documented ACL file."""
    password = secrets.token_hex(16)
    acl = ACL_TEMPLATE.read_text().replace("API_PASSWORD_PLACEHOLDER", password)
    aclfile = tmp_path / "users.acl"
    # The file as documented, plus an admin for the test's own set-up.
    admin = secrets.token_hex(16)
    aclfile.write_text(
        "\n".join(line for line in acl.splitlines() if not line.startswith("#"))
        + f"\nuser default on >{admin} ~* &* +@all\n"
    )
    port = free_port()
    argv = server_args(port, tmp_path / "data", "--save", "", "--aclfile", str(aclfile))
    server = Process("redis-acl", argv, os.environ, tmp_path).start()
    admin_client = redis.Redis(port=port, password=admin, socket_timeout=2)
    wait_for(admin_client.ping, 10, what="redis-server with an ACL file")
    yield port, password
    server.stop()


def test_the_api_works_with_least_privilege_and_nothing_more(
    start: ProcessFactory, acl_redis: tuple[int, str]
) -> None:
    port, password = acl_redis
    api = start(
        "api", REDIS_URL=f"redis://api:{password}@127.0.0.1:{port}/0", NEAR_CACHE_SECONDS="0"
    )
    base = f"http://{api.env['API_BIND']}"
    first = urllib3.request("GET", f"{base}/predict/ETH-EUR", timeout=10)
    second = urllib3.request("GET", f"{base}/predict/ETH-EUR", timeout=10)
    assert (first.status, first.headers["X-Cache"]) == (200, "MISS")  # computed, locked, stored
    assert (second.status, second.headers["X-Cache"]) == (200, "HIT")
    assert urllib3.request("GET", f"{base}/pairs", timeout=10).status == 200
    assert urllib3.request("GET", f"{base}/readyz", timeout=10).status == 200
    # The API measured its clock against Redis's (TIME), as the ACL allows.
    metrics = urllib3.request("GET", f"{base}/metrics", timeout=10).data.decode()
    assert "\nprediction_clock_offset_seconds " in metrics

    api_user = redis.Redis(port=port, username="api", password=password, socket_timeout=2)
    assert api_user.get(prediction_key("ETH-EUR", TEST_VERSION))
    for refused in (
        api_user.flushall,
        lambda: api_user.config_get("*"),
        lambda: api_user.set("elsewhere", "x"),
        lambda: api_user.keys("*"),
        lambda: api_user.delete(prediction_key("ETH-EUR", TEST_VERSION)),
        lambda: api_user.lpush("celery", "x"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            refused()
