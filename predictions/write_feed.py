"""The write feed: every prediction write and model-state change, on one channel.

Writers publish inside the same script or transaction that changes Redis (the store's
compare-and-set, a rollout's pending mark and flip), so a message is sent exactly when
the change is made. An API process follows the channel (WriteFollower) to keep its near
copies current: with thousands of pairs, a copy then lives as long as it is fresh
instead of NEAR_CACHE_SECONDS, and a hit never waits on Redis. Pub/sub is at most once:
a lost subscription (Redis restarted, a network cut) ends following, so copies fall
back to their own max_age until a new subscription is confirmed.

Messages (bytes):
    w <version> <pair> <prediction JSON>     a prediction was stored
    d <version> <pair>                       a prediction was deleted on purpose
    s <version or -> <1 if a flip is pending, else 0>   the active version's state
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable

import redis

from predictions.keys import active_version_key, flip_pending_key, updates_channel
from predictions.near_cache import NearCache
from predictions.prediction import InvalidPrediction, Prediction

log = logging.getLogger(__name__)

CHANNEL = updates_channel()
# A PING unanswered for this long means the subscription is stuck: start again.
STALLED_SECONDS = 2.0


def write_prefix(pair: str, version: str) -> bytes:
    """What a write's message starts with; the stored JSON follows."""
    return f"w {version} {pair} ".encode()


def delete_message(pair: str, version: str) -> bytes:
    return f"d {version} {pair}".encode()


def state_message(version: str | None, flip_pending: bool) -> bytes:
    return f"s {version or '-'} {int(flip_pending)}".encode()


def read_state(client: redis.Redis) -> tuple[str | None, bool]:
    """The active version and whether a flip is pending, in one round trip."""
    pipe = client.pipeline(transaction=False)
    pipe.get(active_version_key())
    pipe.exists(flip_pending_key())
    raw, pending = pipe.execute()
    version = raw.decode() if isinstance(raw, bytes) else raw
    return version, bool(pending)


class WriteFollower:
    """Follows the channel on one background thread (a greenlet under gevent),
    applying every message to a NearCache, and confirming the stream with PINGs."""

    def __init__(
        self,
        client: redis.Redis,
        near: NearCache,
        pairs: frozenset[str],
        ping_seconds: float | None = None,
        recheck_seconds: float = 1.0,
        retry_seconds: float = 0.5,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.near = near
        self.pairs = pairs
        # Several confirmations per max_age, so that a copy is always covered by one.
        self.ping_seconds = ping_seconds or max(0.01, near.max_age / 4)
        self.recheck_seconds = recheck_seconds
        self.retry_seconds = retry_seconds
        self.monotonic = monotonic
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._changes = 0  # state messages applied; a recheck overtaken by one is dropped

    def ensure_running(self) -> None:
        """Start following, once per process (lazily: after gunicorn's fork)."""
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self.run, name="prediction-write-follower", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self._follow()
            except (redis.RedisError, OSError) as exc:
                log.warning("write feed lost, near copies fall back to max_age error=%r", exc)
            except Exception:  # a thread has no caller: log, and start again
                log.exception("write feed failed")
            finally:
                self.near.unfollow()
            self._stop.wait(self.retry_seconds)

    def _follow(self) -> None:
        pubsub = self.client.pubsub()  # type: ignore[no-untyped-call]
        try:
            pubsub.subscribe(CHANNEL)
            deadline = self.monotonic() + STALLED_SECONDS
            while True:  # the subscription is confirmed before anything else comes
                message = pubsub.get_message(timeout=self.ping_seconds)
                if message is not None and message["type"] == "subscribe":
                    break
                if self.monotonic() > deadline:
                    raise redis.TimeoutError("no confirmation of the subscription")
            # Anything that changes after this read arrives on the channel.
            self.near.follow(*read_state(self.client))
            log.info("following prediction writes channel=%s", CHANNEL)
            self._loop(pubsub)
        finally:
            pubsub.close()

    def _loop(self, pubsub: redis.client.PubSub) -> None:
        pings: collections.deque[float] = collections.deque()
        next_ping = next_check = self.monotonic()
        while not self._stop.is_set():
            now = self.monotonic()
            if now >= next_ping:
                pings.append(now)
                pubsub.ping()
                next_ping = now + self.ping_seconds
            if pings and now - pings[0] > STALLED_SECONDS:
                raise redis.TimeoutError(f"PING unanswered for {STALLED_SECONDS:g} s")
            if now >= next_check:
                # Heals a change no message told of (a pending mark expiring, keys
                # flushed by hand), unless a message overtook this read.
                changes = self._changes
                state = read_state(self.client)
                if changes == self._changes:
                    self.near.followed_state(*state)
                next_check = now + self.recheck_seconds
            message = pubsub.get_message(timeout=max(0.0, next_ping - self.monotonic()))
            if message is None:
                continue
            kind = message["type"]
            if kind == "pong" and pings:
                # Redis answers in order: every message published before this PING
                # was sent has now been applied.
                self.near.confirmed(pings.popleft())
            elif kind == "message":
                self._apply(message["data"])

    def _apply(self, data: bytes) -> None:
        kind, _, rest = data.partition(b" ")
        if kind == b"w":
            version, pair, raw = _split(rest, 3)
            if pair not in self.pairs:
                return
            try:
                prediction = Prediction.from_json(raw.encode(), pair)
            except InvalidPrediction:
                return
            if prediction.model_version == version:
                self.near.written(prediction)
        elif kind == b"d":
            _, pair = _split(rest, 2)
            self.near.forget(pair)
        elif kind == b"s":
            version, pending = _split(rest, 2)
            self._changes += 1
            self.near.followed_state(None if version == "-" else version, pending == "1")


def _split(rest: bytes, parts: int) -> list[str]:
    fields = rest.decode().split(" ", parts - 1)
    return fields + [""] * (parts - len(fields))
