from __future__ import annotations

import dataclasses
from email.utils import parsedate_to_datetime

import pytest
from flask import Flask
from hypothesis import given
from hypothesis import strategies as st

from api.http_caching import STALE_MAX_AGE, caching_headers, etag, matches
from tests.harness.doubles import make_prediction

# Computed at 1,000.25, fresh until 1,060.25.
PREDICTION = make_prediction()
GRACE = 30


def _directives(headers: dict[str, str]) -> dict[str, int]:
    return {
        name: int(value)
        for name, _, value in (
            item.strip().partition("=") for item in headers["Cache-Control"].split(",")
        )
    }


def _date(headers: dict[str, str], name: str) -> float:
    return parsedate_to_datetime(headers[name]).timestamp()


def test_a_fresh_answer_is_fresh_for_the_whole_seconds_left_and_never_stale() -> None:
    headers = caching_headers(PREDICTION, now=1_000.3, grace_seconds=GRACE, stale=False)
    assert headers["Cache-Control"] == ("max-age=59, stale-while-revalidate=0, stale-if-error=0")
    assert "Age" not in headers
    assert _date(headers, "Expires") == 1_000 + 59
    assert _date(headers, "Last-Modified") == 1_000
    assert headers["ETag"] == etag(PREDICTION, stale=False)
    # nginx serves through the second it names: the last whole one before fresh_until.
    assert headers["X-Accel-Expires"] == "@1059"


def test_mid_life_max_age_is_the_freshness_left_rounded_down() -> None:
    assert _directives(caching_headers(PREDICTION, 1_030.5, GRACE, False))["max-age"] == 29
    assert _directives(caching_headers(PREDICTION, 1_030.2, GRACE, False))["max-age"] == 30
    # Less than a second left: a cache must ask again.
    assert _directives(caching_headers(PREDICTION, 1_059.5, GRACE, False))["max-age"] == 0
    late = caching_headers(PREDICTION, 1_061.0, GRACE, False)
    assert _directives(late)["max-age"] == 0


def test_a_stale_answer_may_be_reused_for_a_second_then_served_while_revalidating() -> None:
    headers = caching_headers(PREDICTION, now=1_070.75, grace_seconds=GRACE, stale=True)
    left = 1_060 + GRACE - 1_071  # whole seconds of grace left: 19.5, rounded down
    assert _directives(headers) == {
        "max-age": STALE_MAX_AGE,
        "stale-while-revalidate": left - STALE_MAX_AGE,
        "stale-if-error": left - STALE_MAX_AGE,
    }
    assert _date(headers, "Expires") == 1_070 + STALE_MAX_AGE
    # The stale body came to be at fresh_until: its own Last-Modified and ETag.
    assert _date(headers, "Last-Modified") == 1_060
    assert headers["ETag"] == etag(PREDICTION, stale=True)
    assert headers["X-Accel-Expires"] == "@1059"


def test_the_last_second_of_grace_is_not_cached_at_all() -> None:
    headers = caching_headers(PREDICTION, now=1_089.5, grace_seconds=GRACE, stale=True)
    assert _directives(headers) == {
        "max-age": 0,
        "stale-while-revalidate": 0,
        "stale-if-error": 0,
    }


def test_a_prediction_served_stale_before_its_freshness_ends_dates_its_body_now() -> None:
    # Redis unreachable: the process's last copy, served marked stale though still fresh.
    headers = caching_headers(PREDICTION, now=1_010.5, grace_seconds=GRACE, stale=True)
    assert _date(headers, "Last-Modified") == 1_010
    assert _directives(headers)["max-age"] == STALE_MAX_AGE


@given(
    now=st.floats(min_value=1_000.25, max_value=1_090.2),
    stale=st.booleans(),
    grace=st.integers(min_value=0, max_value=120),
)
def test_no_cache_can_keep_an_answer_past_what_the_api_itself_would_serve(
    now: float, stale: bool, grace: int
) -> None:
    """However a cache dates its copy (from `now`, from Date, from receipt), the
    headers never let it serve the fresh body past fresh_until or any body past the
    grace."""
    if now >= PREDICTION.fresh_until + grace or (not stale and now >= PREDICTION.fresh_until):
        return  # the API serves nothing then, or serves it marked stale
    headers = caching_headers(PREDICTION, now, grace, stale)
    directives = _directives(headers)
    lifetime = directives["max-age"] + directives["stale-while-revalidate"]
    assert directives["stale-if-error"] == directives["stale-while-revalidate"]
    if stale:
        assert now + lifetime <= PREDICTION.fresh_until + grace
    else:
        assert lifetime == directives["max-age"]
        assert now + directives["max-age"] <= PREDICTION.fresh_until
    # Expires, from the second `now` is in, says no more than max-age.
    assert now - 1 < _date(headers, "Expires") - directives["max-age"] <= now
    assert _date(headers, "Last-Modified") <= now


def test_etag_is_strong_and_changes_with_what_identifies_a_body() -> None:
    tag = etag(PREDICTION, stale=False)
    assert tag.startswith('"') and not tag.startswith("W/")
    assert etag(PREDICTION, stale=True) not in (tag, "")
    assert etag(dataclasses.replace(PREDICTION, predicted_price=1.0), stale=False) == tag
    for change in (
        {"computed_at": 1_000.251, "fresh_until": 1_060.251},
        {"model_version": "m-2"},
        {"pair": "BTC-EUR"},
        {"horizon_seconds": 60},
    ):
        changed = dataclasses.replace(PREDICTION, **change)
        assert etag(changed, stale=False) != tag
        assert etag(changed, stale=True) != etag(PREDICTION, stale=True)


@pytest.mark.parametrize(
    ("if_none_match", "expected"),
    [
        ('"abc"', True),
        ('W/"abc"', True),  # If-None-Match compares weakly (RFC 9110, 13.1.2)
        ('"x", "abc"', True),
        ('"x",W/"abc" , "y"', True),
        ("*", True),
        ('"abcd"', False),
        ('"x", "y"', False),
        ("", False),
        ('"a,bc"', False),
    ],
)
def test_if_none_match_values(if_none_match: str, expected: bool) -> None:
    assert matches(if_none_match, '"abc"') is expected


def test_a_304_carries_exactly_the_caching_headers_of_the_200(app: Flask) -> None:
    client = app.test_client()
    client.get("/predict/ETH-EUR")  # computed: a miss
    first = client.get("/predict/ETH-EUR")
    again = client.get("/predict/ETH-EUR", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    assert again.data == b""
    # Werkzeug drops Last-Modified from a 304 that has an ETag, as RFC 9110 advises.
    # (The test client's clock and the API's may cross a second between the two.)
    for name in ("ETag", "X-Accel-Expires", "X-Cache"):
        assert again.headers.get(name) == first.headers[name]
    assert again.headers["Cache-Control"].endswith("stale-while-revalidate=0, stale-if-error=0")
    assert "Expires" in again.headers
    other = client.get("/predict/ETH-EUR", headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200


def test_errors_are_never_cached(app: Flask) -> None:
    for path in ("/predict/nope", "/predict/SOL-EUR", "/nowhere"):
        response = app.test_client().get(path)
        assert response.headers["Cache-Control"] == "no-store"
