"""Metrics and logs of the real processes: gunicorn's workers add up, the worker
exports its refreshes, beat's tick is visible, and a refresh failure shows as stale."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import urllib3
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.doubles import parse_media_type
from tests.harness.http import get, log_records
from tests.harness.ports import free_port
from tests.harness.processes import Process, ProcessFactory, wait_for
from tests.harness.system import PAIRS, TEST_TTL

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    response = urllib3.request("GET", url, timeout=5, retries=False)
    assert response.status == 200, response.data[:200]
    # One Content-Type, as strict scrapers parse it (a repeated parameter fails them).
    [content_type] = response.headers.getlist("Content-Type")
    media_type, parameters = parse_media_type(content_type)
    assert media_type == "text/plain" and parameters["charset"] == "utf-8", content_type
    samples: Samples = {}
    for family in text_string_to_metric_families(response.data.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def api_metrics(api: Process) -> Samples:
    return scrape(f"http://{api.env['API_BIND']}/metrics")


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= set(ls))


def test_metrics_add_up_over_processes_and_logs_are_json_lines(start: ProcessFactory) -> None:
    worker_bind = f"127.0.0.1:{free_port()}"
    worker = start("worker", WORKER_METRICS_BIND=worker_bind)
    start("beat")
    api = start("api", API_WORKERS="2")
    wait_for(
        lambda: all(get(api, f"/predict/{p}").headers["X-Cache"] == "HIT" for p in PAIRS),
        30,
        what="every pair a hit",
    )
    before = api_metrics(api)
    sent = 60
    for i in range(sent):
        assert get(api, f"/predict/{PAIRS[i % len(PAIRS)]}").status == 200
    after = api_metrics(api)
    # Both gunicorn workers' counts, added up: every request counted once.
    counted = total(after, "prediction_requests_total") - total(before, "prediction_requests_total")
    assert counted == sent
    assert total(after, "prediction_request_duration_seconds_count", outcome="hit") >= sent
    for pair in PAIRS:
        assert 0 <= total(after, "prediction_age_seconds", pair=pair) < TEST_TTL
        assert total(after, "prediction_stored", pair=pair) == 1
    assert time.time() - total(after, "prediction_beat_last_tick_timestamp_seconds") < 10

    worker_url = f"http://{worker_bind}/metrics"

    def refreshed_twice() -> bool:
        written = total(scrape(worker_url), "prediction_refreshed_pairs_total", result="written")
        return written >= 2 * len(PAIRS)

    wait_for(refreshed_twice, 30, what="every pair refreshed twice, in the worker's metrics")
    refreshed = scrape(worker_url)
    assert total(refreshed, "prediction_refresh_duration_seconds_count") >= 1
    assert total(refreshed, "prediction_computations_total", result="ok") >= len(PAIRS)

    # One JSON object per line: one access line per request, one line per refresh.
    access = [line for line in log_records(api) if line.get("logger") == "api.access"]
    predict = [line for line in access if line["path"].startswith("/predict/")]
    assert len(predict) >= sent
    assert {"pair", "outcome", "duration_ms", "status", "age_seconds", "time"} <= set(predict[-1])
    assert predict[-1]["outcome"] == "hit" and predict[-1]["pair"] in PAIRS
    # And only ours: gunicorn's own access line (on with logconfig_dict, unless
    # gunicorn.conf.py's ServerLog keeps it off) would log every request twice.
    assert not [line for line in log_records(api) if line.get("logger") == "gunicorn.access"]
    refreshes = [line for line in log_records(worker) if "written" in line]
    assert refreshes and {"pairs", "failed", "skipped", "duration_ms"} <= set(refreshes[-1])


def test_a_refresh_failure_moves_stale_and_age_not_fresh_hits(
    start: ProcessFactory, tmp_path: Path
) -> None:
    switch = tmp_path / "model-broken"
    env = {"MODEL": "tests.harness.fault_models:SwitchedFaultModel", "FAULT_FILE": str(switch)}
    start("worker", **env)
    start("beat", **env)
    api = start("api", **env)
    pair = "ETH-EUR"
    wait_for(lambda: get(api, f"/predict/{pair}").headers["X-Cache"] == "HIT", 30, what="a hit")

    switch.touch()  # every refresh fails from now on, the API's own included
    broken_at = time.time()
    first_stale = None
    outcomes: list[str] = []
    # At least a TTL and 4 s (the age asserted below needs them), and until a stale
    # answer has been followed by a few more, within a bound generous for a loaded
    # machine (a fixed TTL + 4 s was the whole wait before).
    while time.time() < broken_at + TEST_TTL + 4 or (
        (first_stale is None or len(outcomes) - outcomes.index("STALE") < 5)
        and time.time() < broken_at + 60
    ):
        answer = get(api, f"/predict/{pair}")
        assert answer.status == 200
        outcomes.append(answer.headers["X-Cache"])
        if answer.headers["X-Cache"] == "STALE" and first_stale is None:
            first_stale = api_metrics(api)
        time.sleep(0.05)
    assert first_stale is not None, outcomes
    stale_answers = len(outcomes) - outcomes.index("STALE")
    assert outcomes[outcomes.index("STALE") :] == ["STALE"] * stale_answers
    last = api_metrics(api)

    # The fresh-hit counter stood still while stale answers were counted as stale.
    hits = "prediction_requests_total"
    assert total(last, hits, outcome="hit") == total(first_stale, hits, outcome="hit")
    stale_counted = total(last, hits, outcome="stale") - total(first_stale, hits, outcome="stale")
    assert stale_counted == stale_answers - 1  # the first was counted before that scrape
    # The age gauges show the prediction getting older than its freshness.
    assert total(last, "prediction_age_seconds", pair=pair) > TEST_TTL
    # Every stale answer was older than its freshness: so was their mean served age.
    served = "prediction_served_age_seconds"
    aged = total(last, f"{served}_sum") - total(first_stale, f"{served}_sum")
    assert aged > stale_counted * TEST_TTL
    assert total(last, "prediction_revalidations_total", result="failed") >= 1

    switch.unlink()  # mended: the background refresh brings it back to fresh
    wait_for(lambda: get(api, f"/predict/{pair}").headers["X-Cache"] == "HIT", 30, what="fresh")
