"""Compute locks: whoever holds a pair's lock is computing its prediction.

A lock is a random token stored with an absolute expiry (SET NX PXAT), released by a
script that deletes the key only if it still holds our token. The expiry is absolute,
not relative, on purpose: a SET that a frozen Redis receives late (the client already
gave up on it, or retried it) must not start a fresh lifetime when Redis wakes up, or a
lock nobody holds would block the pair for a whole timeout.

Locks are per model version: a rollout computing the new version never waits for a
refresh of the old one. The API takes one pair's lock on a miss; a refresh takes a
whole group's in one round trip and releases them in another.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping

import redis

from predictions.infra.keys import compute_lock_key

# Delete the key only if it still holds our token: an expired lock may be someone else's.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


def acquire(
    client: redis.Redis, pair: str, version: str, ttl_seconds: float, now: float
) -> bytes | None:
    """Take the pair's compute lock for a model version if it is free; token or None."""
    return acquire_many(client, [pair], version, ttl_seconds, now).get(pair)


def acquire_many(
    client: redis.Redis,
    pairs: Iterable[str],
    version: str,
    ttl_seconds: float,
    now: float,
) -> dict[str, bytes]:
    """Take the compute lock of every pair that is free; return {pair: token}.

    ``now`` is the caller's clock reading (Clock.now): the expiry is absolute, so it must be
    an instant by Redis's clock, or a host whose clock runs behind writes locks that
    Redis expires at once (and one ahead, locks that outlive their holder).
    """
    pairs = list(pairs)
    tokens = {pair: uuid.uuid4().hex.encode() for pair in pairs}
    expires_ms = int((now + ttl_seconds) * 1000)
    pipe = client.pipeline(transaction=False)
    for pair in pairs:
        pipe.set(compute_lock_key(pair, version), tokens[pair], nx=True, pxat=expires_ms)
    taken = pipe.execute()
    return {pair: tokens[pair] for pair, ok in zip(pairs, taken, strict=True) if ok}


def release(client: redis.Redis, pair: str, version: str, token: bytes) -> None:
    release_many(client, {pair: token}, version)


def release_many(client: redis.Redis, tokens: Mapping[str, bytes], version: str) -> None:
    """Release the locks acquire_many took, those not yet expired and retaken."""
    if not tokens:
        return
    script = client.register_script(_RELEASE)
    pipe = client.pipeline(transaction=False)
    for pair, token in tokens.items():
        script(keys=[compute_lock_key(pair, version)], args=[token], client=pipe)
    pipe.execute()
