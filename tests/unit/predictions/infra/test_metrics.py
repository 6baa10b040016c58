"""/metrics in one process (the Flask test client); the multiprocess mode under
gunicorn is tested in tests/integration/test_observability.py."""

from __future__ import annotations

import dataclasses

import fakeredis
import redis
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from api import create_app
from predictions.infra import metrics
from predictions.infra.heartbeat import write_beat_tick
from predictions.model.predictor import Predictor
from predictions.settings import Settings
from tests.harness.doubles import parse_media_type


def scrape(client: FlaskClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.mimetype == "text/plain"
    samples = {}
    for family in text_string_to_metric_families(answer.get_data(as_text=True)):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def test_metrics_has_one_well_formed_content_type(client: FlaskClient) -> None:
    answer = client.get("/metrics")
    [value] = answer.headers.getlist("Content-Type")
    media_type, parameters = parse_media_type(value)
    assert media_type == "text/plain"
    assert parameters["charset"] == "utf-8"
    # The format prometheus_client wrote the body in, as it names it.
    assert value == metrics.CONTENT_TYPE
    assert "version" in parameters


def test_the_strict_parser_refuses_what_strict_scrapers_refuse() -> None:
    assert parse_media_type('text/plain; version=1.0.0; charset="utf-8"') == (
        "text/plain",
        {"version": "1.0.0", "charset": "utf-8"},
    )
    for bad in (
        "text/plain; version=1.0.0; charset=utf-8; charset=utf-8",
        "text/plain; Charset=utf-8; charset=utf-8",
        "text/plain;",
        "text/plain; charset",
        "text plain",
        "text/plain; charset=utf 8",
    ):
        try:
            parse_media_type(bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")


def requests(samples: dict, outcome: str) -> float:  # type: ignore[type-arg]
    return float(samples.get(("prediction_requests_total", (("outcome", outcome),)), 0.0))


def test_each_answer_counts_under_its_outcome(client: FlaskClient) -> None:
    before = scrape(client)
    client.get("/predict/ETH-EUR")  # miss, computed here
    client.get("/predict/ETH-EUR")  # hit
    client.get("/predict/ETH-EUR")  # hit
    client.get("/predict/NOPE-EUR")  # rejected: not configured
    client.get("/predict/bad!")  # rejected: malformed
    after = scrape(client)
    for outcome, added in (("miss_computed", 1), ("hit", 2), ("rejected", 2), ("stale", 0)):
        assert requests(after, outcome) - requests(before, outcome) == added, outcome
    count = ("prediction_request_duration_seconds_count", (("outcome", "hit"),))
    assert after[count] - before.get(count, 0) == 2
    served = ("prediction_served_age_seconds_count", ())
    assert after[served] - before.get(served, 0) == 3  # every answer with a prediction
    ok = ("prediction_computations_total", (("result", "ok"),))
    assert after[ok] - before.get(ok, 0) == 1


def test_freshness_per_pair_and_beat_tick_are_read_from_redis(
    client: FlaskClient, redis_client: fakeredis.FakeRedis
) -> None:
    client.get("/predict/BTC-EUR")
    write_beat_tick(redis_client, 1_700_000_000.5, keep_seconds=60)
    samples = scrape(client)
    assert samples[("prediction_stored", (("pair", "BTC-EUR"),))] == 1
    assert samples[("prediction_stored", (("pair", "ETH-EUR"),))] == 0
    assert 0 <= samples[("prediction_age_seconds", (("pair", "BTC-EUR"),))] < 5
    assert ("prediction_age_seconds", (("pair", "ETH-EUR"),)) not in samples
    assert samples[("prediction_beat_last_tick_timestamp_seconds", ())] == 1_700_000_000.5


def test_metrics_still_answer_when_redis_is_down(client: FlaskClient) -> None:
    client.get("/predict/ETH-EUR")
    # Port 1 refuses connections at once: the scrape must still answer.
    store = client.application.extensions["predictions"].cache.store
    store.redis = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)
    samples = scrape(client)
    assert requests(samples, "miss_computed") >= 1
    assert not any(name == "prediction_stored" for name, _ in samples)


def test_metrics_content_type_has_one_charset(client: FlaskClient) -> None:
    content_type = client.get("/metrics").headers["Content-Type"]
    assert content_type.startswith("text/plain; version=")
    assert content_type.count("charset") == 1, content_type


def _collected(collector: metrics.FreshnessCollector) -> dict[str, dict[str, float]]:
    """Each family's samples, by their one label's value ("" for none)."""
    found: dict[str, dict[str, float]] = {}
    for family in collector.collect():
        for sample in family.samples:
            label = next(iter(sample.labels.values()), "")
            found.setdefault(sample.name, {})[label] = sample.value
    return found


COUNTS = {"fresh": 2, "stale": 2, "missing": 2}
WORST: list[tuple[str, float | None]] = [("B-EUR", None), ("C-EUR", 950.0), ("D-EUR", 970.0)]


def test_the_collector_exports_counts_and_the_worst_pairs_series() -> None:
    collector = metrics.FreshnessCollector(lambda: (COUNTS, WORST, 995.0), lambda: 1_000.0)
    found = _collected(collector)
    assert found["prediction_pairs"] == COUNTS
    assert found["prediction_stored"] == {"B-EUR": 0, "C-EUR": 1, "D-EUR": 1}
    assert found["prediction_age_seconds"] == {"C-EUR": 50.0, "D-EUR": 30.0}
    assert found["prediction_beat_last_tick_timestamp_seconds"] == {"": 995.0}


def test_no_worst_pairs_no_per_pair_series() -> None:
    collector = metrics.FreshnessCollector(lambda: (COUNTS, [], None), lambda: 1_000.0)
    found = _collected(collector)
    assert found["prediction_pairs"] == COUNTS
    assert "prediction_stored" not in found and "prediction_age_seconds" not in found
    assert "prediction_beat_last_tick_timestamp_seconds" not in found


def test_a_failing_read_leaves_the_freshness_gauges_out() -> None:
    def read() -> tuple[dict[str, int], list[tuple[str, float | None]], float | None]:
        raise redis.ConnectionError("down")

    assert list(metrics.FreshnessCollector(read, lambda: 1_000.0).collect()) == []


def test_metrics_export_at_most_the_configured_per_pair_series(
    settings: Settings, redis_client: fakeredis.FakeRedis, predictor: Predictor
) -> None:
    settings = dataclasses.replace(settings, metrics_max_pair_series=2)
    client = create_app(settings, redis_client, predictor).test_client()
    for pair in ("ETH-EUR", "BTC-EUR", "ETH-USD"):
        assert client.get(f"/predict/{pair}").status_code == 200
    samples = scrape(client)
    stored = {
        labels[0][1]: value
        for (name, labels), value in samples.items()
        if name == "prediction_stored"
    }
    # The missing pair first, then the oldest of the three stored ones.
    assert len(stored) == 2 and stored.pop("BTC-USD") == 0
    assert list(stored.values()) == [1]
    assert samples[("prediction_pairs", (("state", "fresh"),))] == 3
    assert samples[("prediction_pairs", (("state", "missing"),))] == 1
    assert samples[("prediction_pairs", (("state", "stale"),))] == 0
