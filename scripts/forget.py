"""Delete a pair's cached prediction, every model version of it, so that its next
request is a MISS computed for that request (the README's MISS example).

    python -m scripts.forget ETH-EUR       # make forget PAIR=ETH-EUR
"""

from __future__ import annotations

import argparse
import sys

import redis

from predictions.infra.keys import PREDICTION_PREFIX, InvalidPair, canonical_pair, prediction_key
from predictions.infra.redaction import redact
from predictions.settings import Settings
from predictions.wiring import wire


def _version(key: bytes | str, pair: str) -> str:
    text = key.decode() if isinstance(key, bytes) else key
    return text[len(PREDICTION_PREFIX) : -(len(pair) + 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pair", help="a pair such as ETH-EUR")
    args = parser.parse_args(argv)
    try:
        pair = canonical_pair(args.pair)
    except InvalidPair as exc:
        print(f"forget: {exc}", file=sys.stderr)
        return 2
    settings = Settings.from_env()
    wiring = wire(settings, role="forget")
    client = wiring.redis
    try:
        # Every version's copy: whichever the API serves now, the next request misses.
        keys = list(client.scan_iter(match=prediction_key(pair, "*"), count=1000))
        # Through the store, which tells the API processes following the write feed to
        # drop their near copies too (a bare DEL would leave them serving until fresh_until).
        store = wiring.store
        versions = [_version(key, pair) for key in keys]
        deleted = sum(store.forget(pair, version) for version in versions)
    except redis.RedisError as exc:
        print(f"forget: Redis at {redact(settings.redis_url)}: {exc}", file=sys.stderr)
        return 1
    print(f"forgot {pair}: {deleted} cached prediction(s) deleted; its next request computes it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
