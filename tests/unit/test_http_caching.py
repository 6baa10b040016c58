from __future__ import annotations

import dataclasses
from email.utils import parsedate_to_datetime

from flask import Flask

from api.http_caching import caching_headers, etag
from tests.support import make_prediction

PREDICTION = make_prediction()


def _max_age(headers: dict[str, str]) -> int:
    return int(headers["Cache-Control"].split(",")[0].removeprefix("max-age="))


def test_just_computed_is_fresh_for_its_whole_lifetime() -> None:
    headers = caching_headers(PREDICTION, now=1_000.3, grace_seconds=60)
    assert headers["Cache-Control"] == ("max-age=60, stale-while-revalidate=60, stale-if-error=60")
    assert headers["Age"] == "0"
    assert parsedate_to_datetime(headers["Last-Modified"]).timestamp() == 1_000


def test_mid_life_max_age_minus_age_is_the_freshness_left() -> None:
    headers = caching_headers(PREDICTION, now=1_030.5, grace_seconds=60)
    assert _max_age(headers) - int(headers["Age"]) == 30


def test_past_fresh_the_age_exceeds_max_age() -> None:
    within_grace = caching_headers(PREDICTION, now=1_075.0, grace_seconds=60)
    assert int(within_grace["Age"]) - _max_age(within_grace) == 14
    past_grace = caching_headers(PREDICTION, now=1_200.0, grace_seconds=60)
    assert int(past_grace["Age"]) > _max_age(past_grace) + 60


def test_etag_is_strong_and_changes_with_what_identifies_a_prediction() -> None:
    tag = etag(PREDICTION)
    assert tag.startswith('"') and not tag.startswith("W/")
    assert etag(dataclasses.replace(PREDICTION, predicted_price=1.0)) == tag
    for change in (
        {"computed_at": 1_000.251, "fresh_until": 1_060.251},
        {"model_version": "m-2"},
        {"pair": "BTC-EUR"},
        {"horizon_seconds": 60},
    ):
        assert etag(dataclasses.replace(PREDICTION, **change)) != tag  # type: ignore[arg-type]


def test_if_none_match_answers_304_with_the_same_caching_headers(app: Flask) -> None:
    client = app.test_client()
    first = client.get("/predict/ETH-EUR")
    again = client.get("/predict/ETH-EUR", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    assert again.data == b""
    # Werkzeug drops Last-Modified from a 304 that has an ETag, as RFC 9110 advises.
    for name in ("Cache-Control", "ETag", "Age"):
        assert again.headers.get(name) == first.headers[name]
    assert again.headers["X-Cache"] == "HIT"
    other = client.get("/predict/ETH-EUR", headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200


def test_errors_are_never_cached(app: Flask) -> None:
    for path in ("/predict/nope", "/predict/SOL-EUR", "/nowhere"):
        response = app.test_client().get(path)
        assert response.headers["Cache-Control"] == "no-store"
