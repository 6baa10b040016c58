"""What every part of the core stands on: every Redis key (keys), the one clock
(clock), log lines (logs), Prometheus metrics (metrics), beat's heartbeat, and keeping
passwords out of anything printed (redact).

``keys`` and ``metrics`` are used as modules (``keys.prediction_key(...)``). ``metrics``
is imported where it is used (``from predictions.infra import metrics``), never here:
prometheus_client must not be imported before ``use_multiprocess_dir`` has run
(gunicorn.conf.py and worker/__init__.py call it first).
"""

from predictions.infra import keys
from predictions.infra.clock import Clock, RedisClock, process_clock
from predictions.infra.heartbeat import read_beat_tick, write_beat_tick
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
