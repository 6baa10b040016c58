"""Compute locks for many pairs at once, compatible with redis-py's Lock.

The API takes one pair's lock with redis-py's Lock; a refresh takes a whole group's in
one round trip and releases them in another. Both store a random token with an expiry
(SET NX PX) and delete only their own token, so either can hold a pair's lock while the
other waits or skips that pair.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping

import redis

from predictions.keys import compute_lock_key

# Delete the key only if it still holds our token: an expired lock may be someone else's.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


def acquire_many(client: redis.Redis, pairs: Iterable[str], ttl_seconds: float) -> dict[str, bytes]:
    """Take the compute lock of every pair that is free; return {pair: token}."""
    pairs = list(pairs)
    tokens = {pair: uuid.uuid4().hex.encode() for pair in pairs}
    pipe = client.pipeline(transaction=False)
    for pair in pairs:
        pipe.set(compute_lock_key(pair), tokens[pair], nx=True, px=int(ttl_seconds * 1000))
    taken = pipe.execute()
    return {pair: tokens[pair] for pair, ok in zip(pairs, taken, strict=True) if ok}


def release_many(client: redis.Redis, tokens: Mapping[str, bytes]) -> None:
    """Release the locks acquire_many took, those not yet expired and retaken."""
    if not tokens:
        return
    release = client.register_script(_RELEASE)
    pipe = client.pipeline(transaction=False)
    for pair, token in tokens.items():
        release(keys=[compute_lock_key(pair)], args=[token], client=pipe)
    pipe.execute()
