"""The access log: one line per answer, cheap enough to write on every hit.

Through the logging module a line costs several times the rest of a hit. So when the
access logger ends in our own JSON handler (LOG_FORMAT=json, as shipped), the line is
built by the same writer the JSON formatter uses (predictions.infra.json_line) and
written to that handler's stream directly, under the handler's lock. Any other set-up
(text logs, a handler a user added) goes through logging as usual.
"""

from __future__ import annotations

import logging

from predictions.infra import is_json_handler, json_line

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
    message = f"{method} {path} {status}"
    fields = {
        "method": method,
        "path": path,
        "status": status,
        "pair": pair,
        "outcome": outcome,
        "duration_ms": duration_ms,
        "age_seconds": age_seconds,
    }
    handler = _direct_handler()
    if handler is None:
        access_log.info("%s %s %s", method, path, status, extra=fields)
        return
    line = json_line("INFO", access_log.name, message, fields)
    handler.acquire()
    try:
        handler.stream.write(line + handler.terminator)
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
