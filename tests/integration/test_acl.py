"""The API works as the documented least-privilege Redis user, and can do nothing else."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import urllib3

from predictions.infra.keys import prediction_key, registry_key, registry_state_key
from scripts.embedded_redis import server_args
from tests.harness.http import computations, get
from tests.harness.ports import free_port
from tests.harness.processes import ROOT, Process, ProcessFactory, run_pairs, wait_for
from tests.harness.system import TEST_PAIRS, TEST_VERSION

pytestmark = pytest.mark.integration

ACL_TEMPLATE = ROOT / "deploy" / "redis-api-user.acl"


@dataclass(frozen=True)
class AclRedis:
    port: int
    password: str  # the API user's
    admin: str  # the default user's, which may do anything

    def url(self, user: str = "api") -> str:
        password = self.password if user == "api" else self.admin
        return f"redis://{user}:{password}@127.0.0.1:{self.port}/0"


@pytest.fixture
def acl_redis(tmp_path: Path) -> Iterator[AclRedis]:
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
    yield AclRedis(port, password, admin)
    server.stop()


def test_the_api_works_with_least_privilege_and_nothing_more(
    start: ProcessFactory, acl_redis: AclRedis
) -> None:
    port, password = acl_redis.port, acl_redis.password
    api = start("api", REDIS_URL=acl_redis.url(), NEAR_CACHE_SECONDS="0")
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


def test_the_api_user_reads_the_registry_but_cannot_change_it(
    acl_redis: AclRedis, start: ProcessFactory, service_env: dict[str, str], tmp_path: Path
) -> None:
    api = start("api", REDIS_URL=acl_redis.url())
    as_admin = {**service_env, "REDIS_URL": acl_redis.url("default")}
    as_api = {**service_env, "REDIS_URL": acl_redis.url()}
    assert get(api, "/predict/SOL-EUR").status == 404

    # An admin adds a pair: the API, which may only read the registry, serves it.
    added = run_pairs(as_admin, "add", "SOL-EUR")
    assert (added.returncode, added.stderr) == (0, ""), added.stderr
    wait_for(lambda: get(api, "/predict/SOL-EUR").status == 200, 10, what="SOL-EUR served")
    answer = get(api, "/predict/SOL-EUR")
    assert (answer.status, answer.body["pair"]) == (200, "SOL-EUR")
    assert computations(api, "SOL-EUR") == 1  # no worker here: computed on its miss

    # The API user may list the pairs, and change none: one line, exit 1, nothing written.
    admin = redis.Redis(port=acl_redis.port, password=acl_redis.admin, socket_timeout=2)
    before = (admin.hgetall(registry_key()), admin.hgetall(registry_state_key()))
    listed = run_pairs(as_admin, "list").stdout
    assert listed.split() == sorted(["SOL-EUR", *TEST_PAIRS.split(",")])
    assert run_pairs(as_api, "list").stdout == listed
    listing = tmp_path / "pairs.txt"
    listing.write_text("ADA-EUR\n")
    for args in (
        ("add", "ADA-EUR"),
        ("remove", "SOL-EUR"),
        ("load", str(listing)),
        ("load", "--merge", str(listing)),
    ):
        refused = run_pairs(as_api, *args)
        assert refused.returncode == 1, (args, refused)
        assert refused.stdout == ""
        [line] = refused.stderr.splitlines()
        assert line.startswith(f"pairs {args[0]}: Redis at redis://api:"), line
        # redis-py's NoPermissionError: Redis's NOPERM message, without its prefix.
        assert "no permissions" in line, line
        assert acl_redis.password not in line
        assert (admin.hgetall(registry_key()), admin.hgetall(registry_state_key())) == before
    assert run_pairs(as_admin, "list").stdout == listed
    assert get(api, "/predict/SOL-EUR").status == 200
    assert get(api, "/predict/ADA-EUR").status == 404
