"""A pair's own freshness: its TTL and refresh interval, or the settings' where unset.

The registry stores each pair's own values as text: ``""`` (the settings' both),
``"30:10"`` (TTL 30 s, refresh every 10 s), ``"30:"`` or ``":10"`` (one of them).
"""

from __future__ import annotations

import dataclasses
import math


class InvalidFreshness(ValueError):
    """A TTL or refresh interval that cannot be a pair's."""


@dataclasses.dataclass(frozen=True, slots=True)
class Freshness:
    """How long a pair's predictions are fresh, and how often beat refreshes it."""

    ttl_seconds: float
    refresh_seconds: float


@dataclasses.dataclass(frozen=True, slots=True)
class OwnFreshness:
    """What a pair sets for itself; None takes the settings' value."""

    ttl_seconds: float | None = None
    refresh_seconds: float | None = None

    def encode(self) -> str:
        if self.ttl_seconds is None and self.refresh_seconds is None:
            return ""
        return f"{_text(self.ttl_seconds)}:{_text(self.refresh_seconds)}"

    @classmethod
    def decode(cls, text: str) -> OwnFreshness:
        if not text:
            return _DEFAULTS
        ttl, _, refresh = text.partition(":")
        return cls(
            seconds("ttl", ttl) if ttl else None,
            seconds("refresh", refresh) if refresh else None,
        )

    def resolve(self, defaults: Freshness) -> Freshness:
        """The pair's freshness; InvalidFreshness unless it refreshes within its TTL."""
        ttl = defaults.ttl_seconds if self.ttl_seconds is None else self.ttl_seconds
        refresh = defaults.refresh_seconds if self.refresh_seconds is None else self.refresh_seconds
        if refresh >= ttl:
            raise InvalidFreshness(
                f"refresh every {refresh:g} s must be shorter than the TTL of {ttl:g} s "
                "(a third of it is best: two refreshes in a row can then fail before the "
                "pair goes cold); the settings give the one not set "
                f"(PREDICTION_TTL_SECONDS={defaults.ttl_seconds:g}, "
                f"REFRESH_INTERVAL_SECONDS={defaults.refresh_seconds:g})"
            )
        return Freshness(ttl, refresh)


_DEFAULTS = OwnFreshness()
# Longer than any sensible TTL, short enough that an expiry in milliseconds fits Redis.
MAX_SECONDS = 30 * 24 * 3600.0


def seconds(name: str, text: str) -> float:
    """A TTL or interval given as text, checked: InvalidFreshness names ``name``."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_SECONDS:
        raise InvalidFreshness(
            f"{name} {text[:20]!r}: expected a number of seconds > 0 and at most {MAX_SECONDS:g}"
        )
    return value


def _text(value: float | None) -> str:
    # Read back exactly: repr is the shortest text that does (%g kept six digits, so
    # 1234567 came back 1234570, and a refresh just under its TTL came back equal).
    if value is None:
        return ""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)
