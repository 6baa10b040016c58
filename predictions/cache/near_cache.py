"""NearCache: a per-process copy of the predictions this process last saw.

Under load the same few pairs are read thousands of times a second; each read from
Redis is a network round trip. Serving repeats from process memory for at most
``max_age_seconds`` (and never past the prediction's own fresh_until) makes a hit cost a
dict lookup, at the price of answering with a prediction up to max_age older than the
newest one in Redis.

The copy is also the last-known-good prediction: when Redis or the model fails, the
caller may serve it, marked stale, within its grace period. It holds at most
``max_pairs`` copies (NEAR_CACHE_MAX_PAIRS), the least recently used going first.

Rollouts: a copy is served only if it was made by the active model version as the
process last saw it in Redis, and never while a flip is pending. A rollout marks the
flip pending, waits longer than max_age, then flips: by then no process holds a copy
it may serve, so every answer after the flip comes from Redis, by the new version.

Following writes (WriteFollower, below): a process that subscribes to the store's write
feed keeps its copies current, and learns of a pending flip from the same ordered stream.
Each time the stream is confirmed up to date (a PING answered on the subscription, so
every message published before it has been applied), the copies made in that
subscription are as good as just read: they are served, while fresh and of the
followed active version, as long as the stream was confirmed less than max_age ago.
The rollout's wait covers them exactly as it covers a copy read from Redis.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable

import redis

from predictions.cache.store import FEED_CHANNEL, parse_feed_message, read_state
from predictions.infra.background import Background
from predictions.infra.clock import Clock
from predictions.model.prediction import InvalidPrediction, Prediction

log = logging.getLogger(__name__)

# A PING unanswered for this long means the subscription is stuck: start again.
STALLED_SECONDS = 2.0

_NEVER = float("-inf")


class NearCache:
    def __init__(
        self,
        max_age_seconds: float,
        clock: Clock,
        max_pairs: int = 100_000,
    ) -> None:
        self.max_age = max_age_seconds
        self.clock = clock
        self.max_pairs = max_pairs
        # pair -> (prediction, monotonic deadline, epoch it was put in), least recently
        # used first; OrderedDict's operations are atomic under the GIL, so threads and
        # greenlets share it without a lock.
        self._entries: collections.OrderedDict[str, tuple[Prediction, float, int]] = (
            collections.OrderedDict()
        )
        # What the last read from Redis said: the active version, a pending flip.
        self.active_version: str | None = None
        self.flip_pending = False
        # What the write stream says (only the stream sets these; see the docstring).
        self._epoch = 0  # a new subscription, a new epoch: older copies are not followed
        self._following = False
        self._followed_version: str | None = None
        self._followed_pending = True
        self._confirmed_at = _NEVER  # monotonic time the stream was last up to date

    def observe(self, version: str | None, flip_pending: bool) -> None:
        """Record what a read from Redis said about the active model version."""
        self.active_version = version
        self.flip_pending = flip_pending

    def get(self, pair: str) -> Prediction | None:
        """The pair's prediction if this process may serve it without asking Redis:
        fresh, by the active version with no flip pending, and either read less than
        max_age ago or kept current by a confirmed write stream."""
        entry = self._entries.get(pair)
        if entry is None:
            return None
        try:
            self._entries.move_to_end(pair)
        except KeyError:  # evicted or forgotten by another thread since
            pass
        prediction, deadline, epoch = entry
        if self.clock.now() >= prediction.fresh_until:
            return None
        now = self.clock.monotonic()
        if (
            now < deadline
            and not self.flip_pending
            and prediction.model_version == self.active_version
        ):
            return prediction
        if (
            epoch == self._epoch
            and self._following
            and now - self._confirmed_at < self.max_age
            and not self._followed_pending
            and prediction.model_version == self._followed_version
        ):
            return prediction
        return None

    def last_known(self, pair: str) -> Prediction | None:
        """The newest prediction this process saw for the pair, however old."""
        entry = self._entries.get(pair)
        return entry[0] if entry else None

    def put(self, prediction: Prediction, read: bool = True) -> None:
        """Keep a prediction this process read (or computed); ``read=False`` for one the
        write stream delivered, which does not restart the copy's max_age."""
        current = self._entries.get(prediction.pair)
        deadline = self.clock.monotonic() + self.max_age if read else _NEVER
        if current is not None and current[0].model_version == prediction.model_version:
            if current[0].computed_at > prediction.computed_at:
                # Never replace a newer copy with an older one (a slow reader racing a
                # refresh); but do restart the clock: Redis was just read.
                prediction = current[0]
            if not read:
                deadline = current[1]
        self._entries[prediction.pair] = (prediction, deadline, self._epoch)
        while len(self._entries) > self.max_pairs:
            try:
                self._entries.popitem(last=False)
            except KeyError:  # emptied by another thread meanwhile
                break

    def fill(self, prediction: Prediction) -> bool:
        """Keep a copy as the write stream would, only if it evicts nothing; False if
        there was no room."""
        if len(self._entries) >= self.max_pairs and prediction.pair not in self._entries:
            return False
        self.put(prediction, read=False)
        return True

    def holds(self, pair: str) -> bool:
        """Whether this process keeps a copy of the pair (what the write feed updates)."""
        return pair in self._entries

    def forget(self, pair: str) -> None:
        self._entries.pop(pair, None)

    # The write stream's side (WriteFollower).

    @property
    def following(self) -> bool:
        return self._following

    def follow(self, version: str | None, flip_pending: bool) -> None:
        """A new subscription is up: start a new epoch from the state read after it."""
        self._epoch += 1
        self._confirmed_at = _NEVER
        self._followed_version = version
        self._followed_pending = flip_pending
        self._following = True

    def followed_state(self, version: str | None, flip_pending: bool) -> None:
        """The stream (or a check that no message overtook) says the state is this."""
        self._followed_version = version
        self._followed_pending = flip_pending

    def written(self, prediction: Prediction) -> None:
        """The stream delivered a write: update the copy, if this process holds one."""
        if prediction.pair in self._entries:
            self.put(prediction, read=False)

    def confirmed(self, at: float) -> None:
        """Every message published before monotonic time ``at`` has been applied."""
        self._confirmed_at = at

    def unfollow(self) -> None:
        """The subscription is lost: copies live by their own max_age again."""
        self._following = False
        self._confirmed_at = _NEVER


class WriteFollower:
    """Follows the channel on one background thread (a greenlet under gevent),
    applying every message to a NearCache, and confirming the stream with PINGs."""

    def __init__(
        self,
        client: redis.Redis,
        near: NearCache,
        on_registry_change: Callable[[], None] | None = None,
        on_follow: Callable[[], None] | None = None,
        ping_seconds: float | None = None,
        recheck_seconds: float = 1.0,
        retry_seconds: float = 0.5,
    ) -> None:
        self.client = client
        self.near = near
        # Told of a registry change; and run on each new subscription (to fill the
        # near copies while the feed keeps them current).
        self.on_registry_change = on_registry_change
        self.on_follow = on_follow
        # Several confirmations per max_age, so that a copy is always covered by one.
        self.ping_seconds = ping_seconds or max(0.01, near.max_age / 4)
        self.recheck_seconds = recheck_seconds
        self.retry_seconds = retry_seconds
        self.clock = near.clock
        self._background = Background(self.run, "prediction-write-follower")
        self._stop = threading.Event()
        self._changes = 0  # state messages applied; a recheck overtaken by one is dropped

    def ensure_running(self) -> None:
        """Start following, once per process."""
        self._background.ensure_started()

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
            pubsub.subscribe(FEED_CHANNEL)
            deadline = self.clock.monotonic() + STALLED_SECONDS
            while True:  # the subscription is confirmed before anything else comes
                message = pubsub.get_message(timeout=self.ping_seconds)
                if message is not None and message["type"] == "subscribe":
                    break
                if self.clock.monotonic() > deadline:
                    raise redis.TimeoutError("no confirmation of the subscription")
            # Anything that changes after this read arrives on the channel.
            self.near.follow(*read_state(self.client))
            log.info("following prediction writes channel=%s", FEED_CHANNEL)
            if self.on_follow is not None:
                self.on_follow()
            self._loop(pubsub)
        finally:
            pubsub.close()

    def _loop(self, pubsub: redis.client.PubSub) -> None:
        pings: collections.deque[float] = collections.deque()
        next_ping = next_check = self.clock.monotonic()
        while not self._stop.is_set():
            now = self.clock.monotonic()
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
            message = pubsub.get_message(timeout=max(0.0, next_ping - self.clock.monotonic()))
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
        if data[:2] == b"w ":
            # The pair first, and nothing more for a pair this process holds no copy
            # of: with many pairs, most writes are of those.
            start = data.find(b" ", 2) + 1
            if not self.near.holds(data[start : data.find(b" ", start)].decode()):
                return
        message = parse_feed_message(data)
        if message.kind == b"w":
            try:
                prediction = Prediction.from_json(message.body, message.pair)
            except InvalidPrediction:
                return
            if prediction.model_version == message.version:
                self.near.written(prediction)
        elif message.kind == b"d":
            self.near.forget(message.pair)
        elif message.kind == b"s":
            self._changes += 1
            self.near.followed_state(message.version, message.flip_pending)
        elif message.kind == b"r" and self.on_registry_change is not None:
            self.on_registry_change()
