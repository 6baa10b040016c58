"""Wait until the Redis at REDIS_URL answers PING (at most 30 s), so that processes
started next to it under `make run` find it up."""

from __future__ import annotations

import sys
import time

import redis

from predictions.settings import Settings


def main(timeout: float = 30.0) -> int:
    settings = Settings.from_env()
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=1, socket_connect_timeout=1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return 0
        except redis.RedisError as exc:
            if time.monotonic() > deadline:
                print(f"Redis at REDIS_URL did not answer within {timeout:g} s: {exc}")
                return 1
            time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
