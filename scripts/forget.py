"""Delete a pair's cached prediction, every model version of it, so that its next
request is a MISS computed for that request (the README's MISS example).

    python -m scripts.forget ETH-EUR       # make forget PAIR=ETH-EUR
"""

from __future__ import annotations

import argparse
import sys

import redis

from predictions.keys import InvalidPair, canonical_pair, prediction_key
from predictions.redact import redact
from predictions.redis_client import make_redis
from predictions.settings import Settings


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
    client = make_redis(settings, client_name="forget")
    try:
        # Every version's copy: whichever the API serves now, the next request misses.
        keys = list(client.scan_iter(match=prediction_key(pair, "*"), count=1000))
        deleted = int(client.delete(*keys)) if keys else 0
    except redis.RedisError as exc:
        print(f"forget: Redis at {redact(settings.redis_url)}: {exc}", file=sys.stderr)
        return 1
    print(f"forgot {pair}: {deleted} cached prediction(s) deleted; its next request computes it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
