"""JSON errors: every error the API answers has one body shape.

    {"error": {"status": 404, "code": "unknown_pair", "message": "..."}}

Werkzeug's HTTP exceptions keep their headers (Allow on 405, Retry-After on 503);
only the body is replaced. An unexpected exception is logged and answered with the
same shape, never with an HTML page.
"""

from __future__ import annotations

import logging
import re

import orjson
import redis
from flask import Flask
from werkzeug.exceptions import (
    BadRequest,
    HTTPException,
    InternalServerError,
    NotFound,
    ServiceUnavailable,
)
from werkzeug.wrappers import Response

from predictions.cache import Unavailable as PredictionUnavailable
from predictions.infra import redact

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 1


# Werkzeug's ``code`` is the HTTP status; ``error_code`` is the body's "code", as in
# the core's exceptions (predictions.cache.Unavailable).


class BadPairRequest(BadRequest):
    """400: the pair is malformed (predictions.infra.InvalidPair)."""

    error_code = "invalid_pair"


class PairNotFound(NotFound):
    """404: the pair is well formed but not configured."""

    error_code = "unknown_pair"


class RetryLater(ServiceUnavailable):
    """503 with Retry-After: the client may try again in a moment."""

    def __init__(self, description: str, error_code: str) -> None:
        super().__init__(description, retry_after=RETRY_AFTER_SECONDS)
        self.error_code = error_code


def error_code(error: HTTPException) -> str:
    """The body's "code": ours, or Werkzeug's class name in snake case (not_found)."""
    return getattr(error, "error_code", None) or _snake_case(type(error).__name__)


def error_body(status: int, code: str, message: str) -> bytes:
    # A message may quote an exception that quotes a Redis URL: never its password.
    return orjson.dumps({"error": {"status": status, "code": code, "message": redact(message)}})


def render_http_error(error: HTTPException) -> Response:
    response = error.get_response()
    status = response.status_code
    response.set_data(error_body(status, error_code(error), error.description or response.status))
    response.mimetype = "application/json"
    # An error says nothing about the resource: no cache may keep it.
    response.headers["Cache-Control"] = "no-store"
    return response


def render_redis_error(error: redis.RedisError) -> Response:
    log.warning("redis unavailable: %r", error)
    return render_http_error(RetryLater("the prediction cache is unreachable", "cache_unavailable"))


def render_unavailable(error: PredictionUnavailable) -> Response:
    log.warning("unavailable: %s", error)
    return render_http_error(RetryLater(str(error), error.error_code))


def render_unexpected(error: Exception) -> Response:
    log.exception("unhandled error", exc_info=error)
    return render_http_error(InternalServerError("internal error"))


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(HTTPException, render_http_error)
    app.register_error_handler(redis.RedisError, render_redis_error)
    app.register_error_handler(PredictionUnavailable, render_unavailable)
    app.register_error_handler(Exception, render_unexpected)


def _snake_case(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
