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


# A model version goes into keys: short, and nothing that could split a key apart.
VERSION_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")


class InvalidVersion(ValueError):
    """A model version that cannot be part of a key."""


def check_version(version: str) -> str:
    if not isinstance(version, str) or not VERSION_PATTERN.fullmatch(version):
        raise InvalidVersion(
            f"model version {str(version)[:80]!r}: expected 1 to 64 letters, digits, "
            "'.', '_', '+' or '-', starting with a letter or digit"
        )
    return version


# The read script (predictions/cache/store.py) builds prediction keys inside Redis, from the
# active version it reads there, as PREDICTION_PREFIX .. version .. ":" .. pair: the
# same spelling as prediction_key, which is the one place that defines it.
PREDICTION_PREFIX = f"{PREFIX}:prediction:"


def prediction_key(pair: str, version: str) -> str:
    """The string key holding a pair's latest prediction by one model version."""
    return f"{PREDICTION_PREFIX}{version}:{pair}"


def compute_lock_key(pair: str, version: str) -> str:
    """Taken by whoever computes the pair with that model version, so only one does."""
    return f"{PREFIX}:lock:compute:{version}:{pair}"


def active_version_key() -> str:
    """The model version the API serves: a rollout flips it, atomically."""
    return f"{PREFIX}:model:active"


def previous_version_key() -> str:
    """The version served before the last flip: what a rollback goes back to."""
    return f"{PREFIX}:model:previous"


def flip_pending_key() -> str:
    """Set while a rollout is about to flip the active version (with an expiry)."""
    return f"{PREFIX}:model:flip-pending"


def model_import_key(version: str) -> str:
    """The import string (MODEL) that builds a model version, for every process."""
    return f"{PREFIX}:model:import:{version}"


def refresh_slot_key(slot: int, interval_seconds: float) -> str:
    """Claimed by the one refresh, of the pairs refreshed every ``interval_seconds``,
    that runs in interval number ``slot``."""
    return f"{PREFIX}:refresh-slot:{interval_seconds:g}:{slot}"


def registry_key() -> str:
    """The known pairs: a hash of pair -> its own freshness ("" for the settings')."""
    return f"{PREFIX}:registry:pairs"


def registry_staging_key(token: str) -> str:
    """A new set of known pairs being written, a chunk at a time, before it is swapped in
    (with an expiry, so that a writer that dies leaves nothing behind)."""
    return f"{PREFIX}:registry:staging:{token}"


def registry_retired_key(token: str) -> str:
    """The set of known pairs just swapped out, freed in the background (UNLINK)."""
    return f"{PREFIX}:registry:retired:{token}"


def registry_state_key() -> str:
    """The registry's generation (bumped by every change) and its source (PAIRS or the
    pairs command), in one hash: one read tells a process whether to re-read the pairs."""
    return f"{PREFIX}:registry:state"


def asked_pairs_key() -> str:
    """The pairs clients asked for, scored by when they were last asked (PRECOMPUTE)."""
    return f"{PREFIX}:asked"


def updates_channel() -> str:
    """The write feed: the pub/sub channel of every prediction write (cache/store.py)."""
    return f"{PREFIX}:updates"


def beat_tick_key() -> str:
    """The Unix time of celery beat's last tick, so that /metrics can show beat is alive."""
    return f"{PREFIX}:beat:last-tick"
