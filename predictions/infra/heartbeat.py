"""Beat's heartbeat in Redis: the time of its last tick, for /metrics to show."""

from __future__ import annotations

import redis

from predictions.infra.keys import beat_tick_key


def write_beat_tick(client: redis.Redis, now: float, keep_seconds: float) -> None:
    # It expires: a beat that stopped long ago leaves no misleading timestamp behind.
    client.set(beat_tick_key(), f"{now:.3f}", px=max(1, int(keep_seconds * 1000)))


def read_beat_tick(client: redis.Redis) -> float | None:
    raw = client.get(beat_tick_key())
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None
