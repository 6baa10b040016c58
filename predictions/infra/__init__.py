"""What every part of the core stands on: every Redis key (keys), the one clock
(clock), log lines (logs), Prometheus metrics (metrics), beat's heartbeat, and keeping
passwords out of anything printed (redaction).

``keys`` and ``metrics`` are used as modules (``keys.prediction_key(...)``,
``from predictions.infra import metrics``). The clock, the heartbeat and metrics are
imported on first use, not with this package: they import redis-py (and with it ssl) or
prometheus_client, and gunicorn's master reads the settings (which import this package)
before its gevent workers patch the standard library, and before
``use_multiprocess_dir`` tells prometheus_client where its values live.
"""

import importlib
from typing import TYPE_CHECKING, Any

from predictions.infra import keys
from predictions.infra.keys import (
    PAIR_PATTERN,
    InvalidPair,
    InvalidVersion,
    canonical_pair,
    check_version,
)
from predictions.infra.logs import (
    configure_logging,
    configure_root_logging,
    gunicorn_logconfig,
    is_json_handler,
    json_line,
)
from predictions.infra.multiprocess import use_multiprocess_dir
from predictions.infra.redaction import redact

if TYPE_CHECKING:
    from predictions.infra.clock import Clock, RedisClock, process_clock
    from predictions.infra.heartbeat import read_beat_tick, write_beat_tick

_ON_FIRST_USE = {
    "Clock": "predictions.infra.clock",
    "RedisClock": "predictions.infra.clock",
    "process_clock": "predictions.infra.clock",
    "read_beat_tick": "predictions.infra.heartbeat",
    "write_beat_tick": "predictions.infra.heartbeat",
}


def __getattr__(name: str) -> Any:
    if name in _ON_FIRST_USE:
        return getattr(importlib.import_module(_ON_FIRST_USE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "PAIR_PATTERN",
    "Clock",
    "InvalidPair",
    "InvalidVersion",
    "RedisClock",
    "canonical_pair",
    "check_version",
    "configure_logging",
    "configure_root_logging",
    "gunicorn_logconfig",
    "is_json_handler",
    "json_line",
    "keys",
    "process_clock",
    "read_beat_tick",
    "redact",
    "use_multiprocess_dir",
    "write_beat_tick",
]
