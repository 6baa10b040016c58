"""The access log: one line per answer, cheap enough to write on every hit.

Through the logging module, with python-json-logger formatting the record, a line costs
about 60 µs here: four times the rest of a hit. So when the access logger ends in our
own JSON handler (predictions.logs, LOG_FORMAT=json, as shipped), the line is built
with orjson and written to that handler's stream directly (under the handler's lock),
with exactly the fields and order the formatter writes. Any other set-up (text logs,
a handler a user added) goes through logging as usual.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime

import orjson

from predictions.logs import is_json_handler

access_log = logging.getLogger("api.access")


def write(
    method: str,
    path: str,
    status: int,
    pair: str | None,
    outcome: str | None,
    duration_ms: float,
    age_seconds: float | None,
) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    handler = _direct_handler()
    message = f"{method} {path} {status}"
    if handler is None:
        access_log.info(
            "%s %s %s",
            method,
            path,
            status,
            extra={
                "method": method,
                "path": path,
                "status": status,
                "pair": pair,
                "outcome": outcome,
                "duration_ms": duration_ms,
                "age_seconds": age_seconds,
            },
        )
        return
    line = orjson.dumps(
        {
            "level": "INFO",
            "logger": "api.access",
            "process": os.getpid(),
            "message": message,
            "method": method,
            "path": path,
            "status": status,
            "pair": pair,
            "outcome": outcome,
            "duration_ms": duration_ms,
            "age_seconds": age_seconds,
            "time": datetime.now(UTC).isoformat(),
        }
    )
    handler.acquire()
    try:
        handler.stream.write(line.decode() + handler.terminator)
        handler.flush()
    except Exception:  # as logging does: a broken stream never fails a request
        handler.handleError(logging.makeLogRecord({"msg": message}))
    finally:
        handler.release()


def _direct_handler() -> logging.StreamHandler | None:  # type: ignore[type-arg]
    """Our JSON handler, if it is the only place access-log lines go."""
    logger: logging.Logger | None = access_log
    handlers: list[logging.Handler] = []
    while logger is not None:
        handlers.extend(logger.handlers)
        if not logger.propagate:
            break
        logger = logger.parent
    if len(handlers) == 1 and is_json_handler(handlers[0]):
        return handlers[0]  # type: ignore[return-value]
    return None
