#!/usr/bin/env bash
# `make run`: the whole system under honcho, every line prefixed by its process name.
# Without REDIS_URL, a Redis of its own is started on a free port (data in .run/redis),
# so a Redis already running on 6379 is neither used nor in the way.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${REDIS_URL:-}" ]; then
  EMBEDDED_REDIS_PORT="${EMBEDDED_REDIS_PORT:-$(python scripts/embedded_redis.py --free-port)}"
  export EMBEDDED_REDIS_PORT
  export REDIS_URL="redis://127.0.0.1:${EMBEDDED_REDIS_PORT}/0"
  # For `make rollout` / `make rollback` in another terminal.
  mkdir -p .run && echo "$REDIS_URL" > .run/redis-url
  echo "embedded Redis on ${REDIS_URL} (data in .run/redis); Ctrl-C stops everything"
  exec honcho --no-colour start -f Procfile redis worker beat api
fi
echo "using the Redis at REDIS_URL; Ctrl-C stops everything"
exec honcho --no-colour start -f Procfile worker beat api
