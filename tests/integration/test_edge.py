"""The nginx edge cache (`docker compose --profile edge`) in front of the real system.

nginx runs the shipped deploy/nginx/templates/default.conf.template, its EDGE_*
placeholders filled with this test's addresses as the nginx image fills them with
compose's, inside a main config of the test's own (in the foreground, as the current
user, every path in a temporary directory). Over HTTP it shows that nginx answers from
its cache, never past a prediction's freshness, and never caches an error.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import urllib3

from predictions.infra.keys import prediction_key
from tests.harness.ports import free_port
from tests.harness.processes import ROOT, Process, ProcessFactory, RedisServer, wait_for
from tests.harness.system import PAIRS, TEST_TTL, TEST_VERSION

# Answers judged to CLOCK_SLACK (50 ms) past freshness: run alone (`make test`'s serial
# pass), with no neighbour's load to delay them.
pytestmark = [pytest.mark.integration, pytest.mark.serial]

TEMPLATE = ROOT / "deploy" / "nginx" / "templates" / "default.conf.template"
# Every request through nginx is bounded; so is every request nginx makes (the template).
HTTP = urllib3.PoolManager(maxsize=8, retries=False, timeout=urllib3.Timeout(total=15))
# An answer checked fresh, by the API or by nginx (whose clock is read once per turn of
# its event loop), reaches the client a few ms later. Anything more is a stale answer.
CLOCK_SLACK = 0.05


def find_nginx() -> str | None:
    """The nginx binary: on PATH, or where Debian puts it (/usr/sbin, not on every PATH)."""
    found = shutil.which("nginx")
    if found:
        return found
    fallback = Path("/usr/sbin/nginx")
    return str(fallback) if os.access(fallback, os.X_OK) else None


def render(template: str, values: dict[str, str]) -> str:
    """The template with its ${EDGE_*} placeholders filled, as the nginx image's envsubst."""
    rendered = re.sub(r"\$\{(EDGE_\w+)\}", lambda m: values[m[1]], template)
    assert "${" not in rendered, "a placeholder this test does not fill"
    return rendered


def main_config(prefix: Path, edge_conf: Path) -> str:
    """What the nginx image's own nginx.conf provides around the template, for a test."""
    # As root, nginx's workers would switch to `nobody`, who cannot read the temporary
    # directory: they stay the current user instead.
    user = ""
    if os.geteuid() == 0:
        user = f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
    temp_paths = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""
daemon off;
worker_processes 1;
pid {prefix / "nginx.pid"};
error_log stderr notice;
{user}
events {{ worker_connections 256; }}
http {{
{temp_paths}
    include {edge_conf};
}}
"""


@dataclass
class Edge:
    nginx: Process
    api: Process
    url: str


@pytest.fixture
def edge(start: ProcessFactory, redis_server: RedisServer, tmp_path: Path) -> Iterator[Edge]:
    """Worker, beat and the API (with gunicorn's access log), and nginx in front of it."""
    nginx_bin = find_nginx()
    if nginx_bin is None:
        reason = "nginx is not installed (`make nginx` installs it with apt-get, as root)"
        if os.environ.get("REQUIRE_EDGE_TEST") == "1":
            pytest.fail(f"REQUIRE_EDGE_TEST=1 but {reason}")
        pytest.skip(reason)
    start("worker")
    start("beat")
    wait_for(
        lambda: all(redis_server.client().exists(prediction_key(p, TEST_VERSION)) for p in PAIRS),
        30,
        what="every pair cached by the worker",
    )
    # The access log counts the requests that reach the API.
    api = start("api", GUNICORN_CMD_ARGS="--access-logfile -")

    prefix = tmp_path / "nginx"
    prefix.mkdir()
    listen = f"127.0.0.1:{free_port()}"
    values = {
        "EDGE_LISTEN": listen,
        "EDGE_API": api.env["API_BIND"],
        "EDGE_CACHE_DIR": str(prefix / "cache"),
    }
    edge_conf = prefix / "edge.conf"
    edge_conf.write_text(render(TEMPLATE.read_text(), values))
    conf = prefix / "nginx.conf"
    conf.write_text(main_config(prefix, edge_conf))
    argv = [nginx_bin, "-p", str(prefix), "-e", "stderr", "-c", str(conf)]
    checked = subprocess.run([*argv, "-t"], capture_output=True, text=True, timeout=30, check=False)
    assert checked.returncode == 0, checked.stderr

    nginx = Process("nginx", argv, os.environ, tmp_path).start()
    url = f"http://{listen}"

    def answers() -> bool:
        if not nginx.running():
            pytest.fail(f"nginx exited:\n{nginx.output()}")
        return HTTP.request("GET", f"{url}/healthz", timeout=2).status == 200

    try:
        wait_for(answers, 30, what=f"nginx on {listen}")
        yield Edge(nginx, api, url)
    finally:
        nginx.stop()


@dataclass
class Answer:
    status: int
    headers: Any
    body: dict[str, Any]
    received: float  # time.time() when the whole answer was read


def fetch(edge: Edge, path: str) -> Answer:
    response = HTTP.request("GET", f"{edge.url}{path}")
    received = time.time()
    body = orjson.loads(response.data) if response.data else {}
    return Answer(response.status, response.headers, body, received)


def past_freshness(answer: Answer) -> float:
    """Seconds from the end of the prediction's freshness to receiving it (< 0: fresh)."""
    computed_at = datetime.fromisoformat(answer.body["computed_at"]).timestamp()
    return answer.received - (computed_at + TEST_TTL)


def origin_requests(api: Process, prefix: str = "/predict/") -> int:
    """GETs under ``prefix`` that reached the API, by gunicorn's access log."""
    # A plain line, or the same line as a JSON string (LOG_FORMAT=json): quotes escaped.
    pattern = rf'\\?"GET {re.escape(prefix)}\S* HTTP/1\.[01]\\?"'
    return len(re.findall(pattern, api.output()))


def test_edge_serves_hits_and_never_a_prediction_past_its_freshness(edge: Edge) -> None:
    answers: list[Answer] = []
    # Two TTLs and a bit of continuous requests: every pair's nginx entry expires and is
    # fetched again at least twice while we ask for it.
    deadline = time.monotonic() + 2 * TEST_TTL + 1
    while time.monotonic() < deadline:
        for pair in PAIRS:
            answers.append(fetch(edge, f"/predict/{pair}"))
        time.sleep(0.005)

    outcomes = [a.headers.get("X-Cache-Status") for a in answers]
    assert {a.status for a in answers} == {200}
    # No stale answer of any kind from nginx: only fresh hits and fresh fetches.
    assert set(outcomes) <= {"HIT", "MISS", "EXPIRED"}, set(outcomes)
    late = [
        (a.body["pair"], a.headers["X-Cache-Status"], a.headers["X-Cache"], round(seconds, 3))
        for a in answers
        if (seconds := past_freshness(a)) > CLOCK_SLACK
    ]
    assert not late, (
        f"{len(late)} answers past freshness (pair, nginx's status, the API's, seconds past): "
        f"first {late[0]}, latest {max(late, key=lambda item: item[3])}"
    )

    hits = outcomes.count("HIT")
    assert hits > 0, "nginx cached nothing: does the API send X-Accel-Expires?"
    # Every request that was not a hit, and only those, reached the API.
    fetched = len(answers) - hits
    wait_for(lambda: origin_requests(edge.api) >= fetched, 5, what="the API's access log")
    assert origin_requests(edge.api) == fetched
    assert hits > len(answers) / 2, f"{hits} hits of {len(answers)}"
    # Entries did expire and were fetched again: more than one prediction per pair.
    for pair in PAIRS:
        seen = {a.body["computed_at"] for a in answers if a.body["pair"] == pair}
        assert len(seen) >= 2, (pair, seen)

    # A hit's max-age is the one nginx stored, wrong by now: hits say "revalidate"
    # instead, and answers fetched from the API pass its exact caching headers.
    for answer in answers:
        assert "Age" not in answer.headers
        if answer.headers["X-Cache-Status"] == "HIT":
            assert answer.headers["Cache-Control"] == "no-cache"
        else:
            assert answer.headers["Cache-Control"].startswith("max-age=")
            assert answer.headers["Cache-Control"].endswith(
                "stale-while-revalidate=0, stale-if-error=0"
            )


def test_edge_caches_no_errors_and_revalidates_from_its_cache(edge: Edge) -> None:
    for path, status in [("/predict/XRP-JPY", 404), ("/predict/ETHEUR", 400)]:
        answers = [fetch(edge, path) for _ in range(3)]
        assert [a.status for a in answers] == [status] * 3
        assert [a.headers["X-Cache-Status"] for a in answers] == ["MISS"] * 3
        assert {a.headers["Cache-Control"] for a in answers} == {"no-store"}
    for path in ("/predict/XRP-JPY", "/predict/ETHEUR"):
        # gunicorn logs a request just after answering it.
        def logged(p: str = path) -> bool:
            return origin_requests(edge.api, p) >= 3

        wait_for(logged, 5, what=f"{path} logged")
        assert origin_requests(edge.api, path) == 3, "the API saw each request"

    # Not a prediction: passed through, never cached.
    pairs = fetch(edge, "/pairs")
    assert pairs.status == 200 and "X-Cache-Status" not in pairs.headers

    # A client told `no-cache` revalidates: nginx answers 304 from its fresh copy.
    hit = wait_for(
        lambda: (a := fetch(edge, "/predict/ETH-EUR")).headers["X-Cache-Status"] == "HIT" and a,
        10,
        what="a hit",
    )
    assert isinstance(hit, Answer)
    etag = hit.headers["ETag"]
    again = HTTP.request("GET", f"{edge.url}/predict/ETH-EUR", headers={"If-None-Match": etag})
    if again.headers["X-Cache-Status"] == "HIT":  # answered by nginx alone
        assert again.status == 304 and again.headers["ETag"] == etag
    else:  # the copy expired in between and nginx asked the API again
        assert again.status in (200, 304)


def test_edge_refuses_metrics_and_logs_json_lines(edge: Edge) -> None:
    """/metrics is for the internal scraper: the API serves it, the edge never does."""
    api_bind = edge.api.env["API_BIND"]
    assert HTTP.request("GET", f"http://{api_bind}/metrics").status == 200
    for path in ("/metrics", "/metrics/", "/metrics?x=1", "//metrics", "/%6Detrics"):
        response = HTTP.request("GET", f"{edge.url}{path}")
        assert response.status == 404, path
        assert b"prediction_requests_total" not in response.data, path
    assert origin_requests(edge.api, "/metrics") == 1  # ours, direct; none via the edge
    fetch(edge, "/predict/ETH-EUR")
    access = [line for line in edge.nginx.output().splitlines() if "edge.access" in line]
    assert access, edge.nginx.output()
    for line in access:
        assert orjson.loads(line)["logger"] == "edge.access"
