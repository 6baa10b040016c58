"""predictions/rollout.py: precompute every pair under the new version, mark the flip
pending, wait out the near copies, then flip in one transaction; or change nothing."""

from __future__ import annotations

import dataclasses
import time

import fakeredis
import pytest

from predictions.cache import FEED_CHANNEL, state_message
from predictions.infra.keys import (
    active_version_key,
    flip_pending_key,
    model_import_key,
    prediction_key,
    previous_version_key,
)
from predictions.model import LogLinearTrendModel
from predictions.model.prediction import Prediction
from predictions.rollout import RolloutFailed, flip_wait_seconds, rollback, rollout
from predictions.settings import Settings
from predictions.wiring import Wiring, wire

NEW = "tests.harness.doubles:CountingModel"  # version counting-1
OLD_VERSION = LogLinearTrendModel.version
OLD = "predictions.model:LogLinearTrendModel"


@pytest.fixture
def live(redis_client: fakeredis.FakeRedis) -> fakeredis.FakeRedis:
    """A cache serving the default model, as `make run` leaves it."""
    redis_client.set(active_version_key(), OLD_VERSION)
    redis_client.set(model_import_key(OLD_VERSION), OLD)
    return redis_client


def _wired(settings: Settings, client: fakeredis.FakeRedis) -> Wiring:
    """What `python -m predictions.rollout` builds, around a test's Redis."""
    return wire(settings, role="test", redis_client=client)


def stored(client: fakeredis.FakeRedis, pair: str, version: str) -> Prediction | None:
    raw = client.get(prediction_key(pair, version))
    if raw is None:
        return None
    assert isinstance(raw, bytes)
    return Prediction.from_json(raw, pair)


def test_every_pair_is_stored_under_the_new_version_before_the_flip(
    settings: Settings, live: fakeredis.FakeRedis
) -> None:
    seen: dict[str, object] = {}

    def sleep(seconds: float) -> None:  # while the flip is pending
        seen["waited"] = seconds
        seen["active"] = live.get(active_version_key())
        seen["pending"] = live.get(flip_pending_key())
        seen["missing"] = [p for p in settings.pairs if stored(live, p, "counting-1") is None]

    said: list[str] = []
    assert rollout(_wired(settings, live), NEW, say=said.append, sleep=sleep) == "counting-1"
    assert seen == {
        "waited": flip_wait_seconds(settings),
        "active": OLD_VERSION.encode(),  # the API still served the old version
        "pending": b"counting-1",
        "missing": [],
    }
    assert live.get(active_version_key()) == b"counting-1"
    assert live.get(previous_version_key()) == OLD_VERSION.encode()
    assert not live.exists(flip_pending_key())
    assert live.get(model_import_key("counting-1")) == NEW.encode()
    assert any("flipped" in line for line in said)


def test_the_wait_outlasts_a_near_copy_and_a_redis_timeout(settings: Settings) -> None:
    assert flip_wait_seconds(settings) > (
        settings.near_cache_seconds + settings.redis_socket_timeout_seconds
    )


def test_the_flip_is_announced_on_the_write_feed(
    settings: Settings, live: fakeredis.FakeRedis
) -> None:
    pubsub = live.pubsub()  # type: ignore[no-untyped-call]
    pubsub.subscribe(FEED_CHANNEL)
    rollout(_wired(settings, live), NEW, say=lambda _: None, sleep=lambda _: None)
    messages = []
    while (message := pubsub.get_message(timeout=0.1)) is not None:
        if message["type"] == "message":
            messages.append(message["data"])
    states = [m for m in messages if m.startswith(b"s ")]
    assert states == [
        state_message(OLD_VERSION, True),
        state_message("counting-1", False),
    ]
    # Every new prediction was written (and announced) before the flip was marked.
    pending_at = messages.index(states[0])
    writes = [i for i, m in enumerate(messages) if m.startswith(b"w counting-1 ")]
    assert len(writes) == len(settings.pairs) and max(writes) < pending_at


def test_predictions_that_would_go_stale_before_the_flip_are_computed_again(
    settings: Settings, live: fakeredis.FakeRedis
) -> None:
    # A TTL of 1 s leaves no second of freshness past the wait: every pair is due.
    short = dataclasses.replace(settings, prediction_ttl_seconds=1, refresh_interval_seconds=0.5)
    first: dict[str, float] = {}

    def sleep(_: float) -> None:
        for pair in short.pairs:
            prediction = stored(live, pair, "counting-1")
            assert prediction is not None
            first[pair] = prediction.computed_at
        time.sleep(0.01)  # so that a recomputation is seen to be later

    rollout(_wired(short, live), NEW, say=lambda _: None, sleep=sleep)
    for pair in short.pairs:
        prediction = stored(live, pair, "counting-1")
        assert prediction is not None and prediction.computed_at > first[pair], pair


def test_fresh_enough_predictions_are_not_computed_again(
    settings: Settings, live: fakeredis.FakeRedis
) -> None:
    first: dict[str, float] = {}

    def sleep(_: float) -> None:
        for pair in settings.pairs:
            prediction = stored(live, pair, "counting-1")
            assert prediction is not None
            first[pair] = prediction.computed_at
        time.sleep(0.01)

    rollout(_wired(settings, live), NEW, say=lambda _: None, sleep=sleep)  # a TTL of 30 s
    for pair in settings.pairs:
        prediction = stored(live, pair, "counting-1")
        assert prediction is not None and prediction.computed_at == first[pair], pair


def test_the_active_version_is_left_alone(settings: Settings, live: fakeredis.FakeRedis) -> None:
    said: list[str] = []
    assert rollout(_wired(settings, live), OLD, say=said.append) == OLD_VERSION
    assert "nothing to do" in said[0]
    assert not live.exists(previous_version_key())
    assert not [p for p in settings.pairs if live.exists(prediction_key(p, OLD_VERSION))]


@pytest.mark.parametrize(
    ("import_string", "why"),
    [
        ("tests.harness.doubles:FailingModel", "pairs failed"),
        ("tests.harness.doubles:NoSuchModel", "NoSuchModel"),
    ],
)
def test_a_failure_before_the_flip_changes_nothing(
    settings: Settings, live: fakeredis.FakeRedis, import_string: str, why: str
) -> None:
    with pytest.raises(RolloutFailed, match=why):
        rollout(_wired(settings, live), import_string, say=lambda _: None, sleep=lambda _: None)
    assert live.get(active_version_key()) == OLD_VERSION.encode()
    assert not live.exists(flip_pending_key())
    assert not live.exists(previous_version_key())


def test_a_rollout_that_lost_a_race_flips_nothing(
    settings: Settings, live: fakeredis.FakeRedis
) -> None:
    def another_rollout_meanwhile(_: float) -> None:
        live.set(active_version_key(), "other-1")

    with pytest.raises(RolloutFailed, match="another rollout"):
        rollout(_wired(settings, live), NEW, say=lambda _: None, sleep=another_rollout_meanwhile)
    assert live.get(active_version_key()) == b"other-1"
    assert not live.exists(previous_version_key())


def test_rollback_returns_to_the_previous_version(
    settings: Settings, live: fakeredis.FakeRedis
) -> None:
    rollout(_wired(settings, live), NEW, say=lambda _: None, sleep=lambda _: None)
    assert rollback(_wired(settings, live), say=lambda _: None) == OLD_VERSION
    assert live.get(active_version_key()) == OLD_VERSION.encode()
    assert live.get(previous_version_key()) == b"counting-1"
    # Its predictions were computed again (they may have expired meanwhile).
    assert all(stored(live, p, OLD_VERSION) is not None for p in settings.pairs)


def test_rollback_needs_a_previous_version_and_its_import_string(
    settings: Settings, live: fakeredis.FakeRedis
) -> None:
    with pytest.raises(RolloutFailed, match="no previous version"):
        rollback(_wired(settings, live), say=lambda _: None)
    live.set(previous_version_key(), "gone-1")
    with pytest.raises(RolloutFailed, match="no import string"):
        rollback(_wired(settings, live), say=lambda _: None)
    assert live.get(active_version_key()) == OLD_VERSION.encode()
