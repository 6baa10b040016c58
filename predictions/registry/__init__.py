"""The known pairs: the registry in Redis, each process's live view of it, each pair's
own freshness, and which pairs clients ask for (PRECOMPUTE=asked)."""

from predictions.registry.asked import (
    ASKED_LIFETIMES,
    AskedPairs,
    forget_unasked,
    most_recently_asked,
    recently_asked,
)
from predictions.registry.freshness import Freshness, InvalidFreshness, OwnFreshness, seconds
from predictions.registry.known import KnownPairs
from predictions.registry.pair_registry import (
    SOURCE_COMMAND,
    SOURCE_SETTING,
    PairRegistry,
    RegistryRefused,
    Snapshot,
)

__all__ = [
    "ASKED_LIFETIMES",
    "SOURCE_COMMAND",
    "SOURCE_SETTING",
    "AskedPairs",
    "Freshness",
    "InvalidFreshness",
    "KnownPairs",
    "OwnFreshness",
    "PairRegistry",
    "RegistryRefused",
    "Snapshot",
    "forget_unasked",
    "most_recently_asked",
    "recently_asked",
    "seconds",
]
