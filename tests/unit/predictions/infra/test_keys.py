from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from predictions.infra.keys import (
    InvalidPair,
    InvalidVersion,
    canonical_pair,
    check_version,
    compute_lock_key,
    prediction_key,
)


@pytest.mark.parametrize(
    ("text", "pair"),
    [
        ("ETH-EUR", "ETH-EUR"),
        ("eth-eur", "ETH-EUR"),
        ("Btc-Usdt", "BTC-USDT"),
        ("1inch-eur", "1INCH-EUR"),
    ],
)
def test_pairs_are_canonicalised(text: str, pair: str) -> None:
    assert canonical_pair(text) == pair


@pytest.mark.parametrize(
    "text",
    ["", "ETH", "ETH-", "-EUR", "ETH/EUR", "ETH_EUR", "ETH-EUR-USD", "E-EUR", "ETH-EUR ",
     "ABCDEFGHIJK-EUR", "ſol-eur", "ETH-ÉUR", "eth-eur\n", "x" * 10_000],
)  # fmt: skip
def test_malformed_pairs_are_rejected(text: str) -> None:
    with pytest.raises(InvalidPair):
        canonical_pair(text)


@given(st.text(max_size=40))
def test_anything_is_either_rejected_or_a_canonical_pair(text: str) -> None:
    try:
        pair = canonical_pair(text)
    except InvalidPair:
        return
    assert re.fullmatch(r"[A-Z0-9]{2,10}-[A-Z0-9]{2,10}", pair)
    assert pair == text.upper()


def test_keys_are_namespaced_per_pair() -> None:
    assert prediction_key("ETH-EUR", "m-1") == "pc:prediction:m-1:ETH-EUR"
    assert compute_lock_key("ETH-EUR", "m-1") == "pc:lock:compute:m-1:ETH-EUR"
    assert prediction_key("ETH-EUR", "m-1") != prediction_key("BTC-EUR", "m-1")
    assert prediction_key("ETH-EUR", "m-1") != prediction_key("ETH-EUR", "m-2")


@pytest.mark.parametrize("version", ["", "a:b", "a b", "-x", "x" * 65, "é", "a*"])
def test_versions_that_could_break_a_key_are_refused(version: str) -> None:
    with pytest.raises(InvalidVersion):
        check_version(version)
    assert check_version("log-linear-trend-1") == "log-linear-trend-1"
