"""Serving a pair: fresh when possible, stale within grace, computed exactly once.

The store (every read and write of a prediction in Redis, and the write feed those
writes publish), each process's near copies (and the follower that keeps them
current), and the read-through cache that puts them together: one computation per pair
across every process and host (locks), one read per pair within a process (single
flight), stale answers recomputed in the background (revalidation), and a Redis that
keeps failing skipped for a while (circuit breaker).
"""

from predictions.cache import locks
from predictions.cache.circuit import CircuitBreaker
from predictions.cache.near_cache import NearCache, WriteFollower
from predictions.cache.read_through import (
    CacheUnavailable,
    ComputeFailed,
    ComputeTimeout,
    Limits,
    Lookup,
    Outcome,
    Overloaded,
    PredictionCache,
    Unavailable,
)
from predictions.cache.store import FEED_CHANNEL, PredictionStore, state_message

__all__ = [
    "FEED_CHANNEL",
    "CacheUnavailable",
    "CircuitBreaker",
    "ComputeFailed",
    "ComputeTimeout",
    "Limits",
    "Lookup",
    "NearCache",
    "Outcome",
    "Overloaded",
    "PredictionCache",
    "PredictionStore",
    "Unavailable",
    "WriteFollower",
    "locks",
    "state_message",
]
