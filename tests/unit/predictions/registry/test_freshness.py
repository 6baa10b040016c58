from __future__ import annotations

import pytest

from predictions.registry import Freshness, InvalidFreshness, OwnFreshness, seconds
from predictions.registry.freshness import MAX_SECONDS

DEFAULTS = Freshness(ttl_seconds=30, refresh_seconds=10)


@pytest.mark.parametrize(
    ("own", "text"),
    [
        (OwnFreshness(), ""),
        (OwnFreshness(30, 10), "30:10"),
        (OwnFreshness(30, None), "30:"),
        (OwnFreshness(None, 10), ":10"),
        (OwnFreshness(0.5, 0.25), "0.5:0.25"),
    ],
)
def test_own_freshness_is_stored_as_short_text_and_read_back(own: OwnFreshness, text: str) -> None:
    assert own.encode() == text
    assert OwnFreshness.decode(text) == own


@pytest.mark.parametrize(
    "own",
    [
        OwnFreshness(1_234_567, 654_321),  # seven digits: %g would round them
        OwnFreshness(30.1234567, 10.000001),
        OwnFreshness(MAX_SECONDS, None),
        OwnFreshness(None, 1e-7),
    ],
)
def test_what_a_pair_sets_is_read_back_exactly(own: OwnFreshness) -> None:
    assert OwnFreshness.decode(own.encode()) == own


def test_values_too_close_to_round_apart_still_refresh_within_the_ttl() -> None:
    # Valid as given (refresh < TTL); it must stay valid once stored and read back.
    own = OwnFreshness(100.0000001, 100.0)
    assert own.resolve(DEFAULTS) == Freshness(100.0000001, 100.0)
    assert OwnFreshness.decode(own.encode()).resolve(DEFAULTS) == Freshness(100.0000001, 100.0)


def test_unset_values_take_the_settings() -> None:
    assert OwnFreshness().resolve(DEFAULTS) == DEFAULTS
    assert OwnFreshness(60, None).resolve(DEFAULTS) == Freshness(60, 10)
    assert OwnFreshness(None, 5).resolve(DEFAULTS) == Freshness(30, 5)


@pytest.mark.parametrize(
    "own",
    [
        OwnFreshness(10, 10),  # refresh equal to the TTL
        OwnFreshness(None, 30),  # the settings' TTL
        OwnFreshness(5, None),  # the settings' refresh, 10 s, outlives a 5 s TTL
    ],
)
def test_a_pair_must_refresh_within_its_ttl(own: OwnFreshness) -> None:
    with pytest.raises(InvalidFreshness, match="shorter than the TTL") as caught:
        own.resolve(DEFAULTS)
    # Says which settings gave the values the pair did not set.
    assert "PREDICTION_TTL_SECONDS=30" in str(caught.value)
    assert "REFRESH_INTERVAL_SECONDS=10" in str(caught.value)


@pytest.mark.parametrize("text", ["abc:10", "30:x", "0:", ":-1", "nan:", ":inf"])
def test_a_stored_value_that_is_not_seconds_is_refused(text: str) -> None:
    with pytest.raises(InvalidFreshness):
        OwnFreshness.decode(text)


@pytest.mark.parametrize(
    ("text", "value"),
    [("30", 30.0), ("0.5", 0.5), ("1e3", 1000.0), (str(MAX_SECONDS), MAX_SECONDS)],
)
def test_seconds_accepts_positive_numbers_up_to_the_bound(text: str, value: float) -> None:
    assert seconds("ttl", text) == value


@pytest.mark.parametrize(
    "text", ["0", "-1", "", "abc", "nan", "inf", "-inf", str(MAX_SECONDS + 1), "0x10", "1e400"]
)
def test_seconds_refuses_anything_else_and_names_the_value(text: str) -> None:
    with pytest.raises(InvalidFreshness, match=r"^refresh ") as caught:
        seconds("refresh", text)
    assert repr(text[:20]) in str(caught.value)


def test_a_long_bad_value_is_quoted_short() -> None:
    with pytest.raises(InvalidFreshness) as caught:
        seconds("ttl", "9" * 1000)
    assert "9" * 21 not in str(caught.value)
