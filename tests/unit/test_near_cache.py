from __future__ import annotations

import dataclasses

from predictions.near_cache import NearCache
from tests.support import make_prediction

PREDICTION = make_prediction(computed_at=1_000.0, fresh_until=1_060.0)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_an_entry_lives_at_most_max_age() -> None:
    wall, mono = Clock(1_010.0), Clock(50.0)
    near = NearCache(0.25, clock=wall, monotonic=mono)
    near.observe(PREDICTION.model_version, flip_pending=False)
    near.put(PREDICTION)
    assert near.get("ETH-EUR") is PREDICTION
    mono.now += 0.24
    assert near.get("ETH-EUR") is PREDICTION
    mono.now += 0.02
    assert near.get("ETH-EUR") is None


def test_an_entry_never_outlives_its_prediction() -> None:
    wall, mono = Clock(1_059.9), Clock(50.0)
    near = NearCache(0.5, clock=wall, monotonic=mono)
    near.observe(PREDICTION.model_version, flip_pending=False)
    near.put(PREDICTION)
    assert near.get("ETH-EUR") is PREDICTION
    wall.now = 1_060.0
    assert near.get("ETH-EUR") is None


def test_a_newer_put_replaces_and_pairs_are_separate() -> None:
    near = NearCache(0.5, clock=Clock(1_010.0), monotonic=Clock(0.0))
    near.observe(PREDICTION.model_version, flip_pending=False)
    newer = dataclasses.replace(PREDICTION, computed_at=1_005.0, fresh_until=1_065.0)
    near.put(PREDICTION)
    near.put(newer)
    assert near.get("ETH-EUR") is newer
    assert near.get("BTC-EUR") is None


def test_zero_max_age_disables_it() -> None:
    near = NearCache(0, clock=Clock(1_010.0), monotonic=Clock(0.0))
    near.observe(PREDICTION.model_version, flip_pending=False)
    near.put(PREDICTION)
    assert near.get("ETH-EUR") is None


def test_only_the_active_versions_copies_are_served_and_none_while_a_flip_is_pending() -> None:
    near = NearCache(0.5, clock=Clock(1_010.0), monotonic=Clock(0.0))
    near.observe("m-1", flip_pending=False)
    near.put(PREDICTION)
    assert near.get("ETH-EUR") is PREDICTION
    near.observe("m-1", flip_pending=True)  # a rollout is about to flip
    assert near.get("ETH-EUR") is None
    near.observe("m-2", flip_pending=False)  # flipped: m-1's copy is never served again
    assert near.get("ETH-EUR") is None
    newer_version = dataclasses.replace(PREDICTION, model_version="m-2")
    near.put(newer_version)
    assert near.get("ETH-EUR") is newer_version
    # An older computation of the new version replaces a copy of the old version.
    assert near.last_known("ETH-EUR") is newer_version
