"""Currency pairs and every Redis key the service uses.

No other module spells a key: grep here to see everything the service keeps in Redis.
"""

from __future__ import annotations

import re

PREFIX = "pc"
# An asset symbol is 2 to 10 letters or digits (BTC, ETH, USDT, 1INCH). Clients may
# write a pair in any case (PAIR_PATTERN, as published in the OpenAPI document); its
# canonical spelling is upper case.
PAIR_PATTERN = r"^[A-Za-z0-9]{2,10}-[A-Za-z0-9]{2,10}$"
_CANONICAL = re.compile(r"[A-Z0-9]{2,10}-[A-Z0-9]{2,10}")
MAX_PAIR_LENGTH = 21


class InvalidPair(ValueError):
    """Text that is not a currency pair of the form BASE-QUOTE."""


def canonical_pair(text: str) -> str:
    """Return the canonical spelling of a pair (``eth-eur`` -> ``ETH-EUR``)."""
    # Length and ASCII first: nothing long is matched, and no non-ASCII letter is
    # upper-cased into an ASCII one ("ſ".upper() == "S").
    upper = text.upper() if len(text) <= MAX_PAIR_LENGTH and text.isascii() else ""
    if not _CANONICAL.fullmatch(upper):
        raise InvalidPair(
            f"{text[:40]!r} is not a currency pair: expected BASE-QUOTE, two to ten "
            "letters or digits each, such as ETH-EUR"
        )
    return upper


def prediction_key(pair: str) -> str:
    """The string key holding a pair's latest prediction (JSON, with an expiry)."""
    return f"{PREFIX}:prediction:{pair}"


def compute_lock_key(pair: str) -> str:
    """The lock taken by whoever computes a pair's prediction, so only one does."""
    return f"{PREFIX}:lock:compute:{pair}"


def refresh_slot_key(slot: int) -> str:
    """Claimed by the one refresh that runs in refresh interval number ``slot``."""
    return f"{PREFIX}:refresh-slot:{slot}"


def beat_tick_key() -> str:
    """The Unix time of celery beat's last tick, so that /metrics can show beat is alive."""
    return f"{PREFIX}:beat:last-tick"
