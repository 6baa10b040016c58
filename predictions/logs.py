"""Logging set-up shared by the API, the worker and beat: JSON lines or plain text.

With LOG_FORMAT=json (the default) every line is one JSON object: time, level,
logger, process, message, and the fields a call passes in ``extra`` (pair, outcome,
timings...), so that a log pipeline can filter on them without parsing messages.
"""

from __future__ import annotations

import logging

import orjson
from pythonjsonlogger.json import JsonFormatter

from predictions.redact import redact

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
JSON_FIELDS = ("levelname", "name", "process", "message")
# Our loggers: the core, the API (and its access log) and the worker's own modules.
LOGGERS = ("predictions", "api", "worker")


class TextFormatter(logging.Formatter):
    """Plain lines, with any URL password masked."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonLineFormatter(JsonFormatter):
    """One JSON object per line, with any URL password masked."""

    def __init__(self) -> None:
        super().__init__(
            JSON_FIELDS,
            # orjson: a tenth of the stdlib's time, on a line written for every request.
            json_serializer=_orjson_dumps,
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",  # ISO 8601, UTC
            json_ensure_ascii=False,
        )

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "text":
        return TextFormatter()
    return JsonLineFormatter()


def _orjson_dumps(data: object, **_: object) -> str:
    return orjson.dumps(data, default=str).decode()


def configure_logging(level: str, log_format: str = "json") -> None:
    """Send the service's own log lines to stderr at ``level``, once per process."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(formatter(log_format))
            logger.addHandler(handler)
            # Our handler prints them; a root handler (if any) would print them twice.
            logger.propagate = False
