"""Logging set-up shared by the API, the worker and beat: JSON lines or plain text.

With LOG_FORMAT=json (the default) every line is one JSON object: time, level,
logger, process, message, and the fields a call passes in ``extra`` (pair, outcome,
timings...), so that a log pipeline can filter on them without parsing messages.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Mapping

import orjson

from predictions.infra.redaction import redact

TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
# Our loggers: the core, the API (and its access log) and the worker's own modules.
LOGGERS = ("predictions", "api", "worker")
# A record's own attributes: anything else on it came from ``extra`` and is a field.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def json_line(
    level: str,
    logger: str,
    message: str,
    fields: Mapping[str, object] | None = None,
    created: float | None = None,
) -> str:
    """One JSON log line, any URL password masked: the only writer of the shape
    (the formatter below, the API's access log, Celery's signal-time notices)."""
    if created is None:
        moment = datetime.datetime.now(datetime.UTC)
    else:
        moment = datetime.datetime.fromtimestamp(created, datetime.UTC)
    line = {"level": level, "logger": logger, "process": os.getpid(), "message": message}
    if fields:
        line.update(fields)
    line["time"] = moment.isoformat()
    # orjson: a tenth of the stdlib's time, on a line written for every request.
    return redact(orjson.dumps(line, default=str).decode())


class TextFormatter(logging.Formatter):
    """Plain lines, with any URL password masked."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonLineFormatter(logging.Formatter):
    """One JSON object per line: level, logger, process, message, the fields a call
    passed in ``extra``, and the time (ISO 8601, UTC)."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, object] = {}
        if record.exc_info:
            fields["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            fields["stack_info"] = self.formatStack(record.stack_info)
        fields.update((k, v) for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES)
        return json_line(record.levelname, record.name, record.getMessage(), fields, record.created)


def formatter(log_format: str) -> logging.Formatter:
    if log_format == "text":
        return TextFormatter()
    return JsonLineFormatter()


def is_json_handler(handler: logging.Handler) -> bool:
    """True for a plain stream handler with our JSON formatter and no filters (the
    API's access log writes such lines itself, see api/access_log.py)."""
    return (
        type(handler) is logging.StreamHandler
        and isinstance(handler.formatter, JsonLineFormatter)
        and not handler.filters
        and handler.level <= logging.INFO
    )


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


def configure_root_logging(level: str | int, log_format: str) -> None:
    """Every other library's lines (Celery's, gunicorn's, warnings) in our format too."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "_prediction_cache", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(log_format))
    handler._prediction_cache = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # Python warnings (Celery's SecurityWarning when run as root, deprecations) as
    # log lines rather than bare multi-line text on stderr.
    logging.captureWarnings(True)


def gunicorn_logconfig(level: str, log_format: str) -> dict[str, object]:
    """gunicorn's logconfig_dict: its error and access logs in our format, on stderr."""
    if log_format == "text":
        return {}  # gunicorn's own plain lines
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "json",
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "predictions.infra.logs.JsonLineFormatter"}},
        "handlers": {"stderr": handler},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level, "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": level, "handlers": ["stderr"], "propagate": False},
        },
    }
