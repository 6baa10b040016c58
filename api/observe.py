"""Per-request metrics and the JSON access log: one place sees every answer.

The views say what they served by leaving it in the WSGI environ (the pair, the
outcome, the prediction's age); the after-request hook turns that and the response's
status into Prometheus samples and one access-log line. It runs on every request, so
it reads the environ once (no request proxy lookups) and uses metric children resolved
ahead of time.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, Response, request

from api import access_log
from predictions.cache import Outcome
from predictions.infra import metrics

# What the views leave in request.environ for the hook.
PREDICT = "prediction_cache.predict"  # set by GET /predict/<pair> before anything else
PAIR = "prediction_cache.pair"
OUTCOME = "prediction_cache.outcome"
AGE = "prediction_cache.age_seconds"
_STARTED = "prediction_cache.started"


_REQUESTS = {outcome: metrics.REQUESTS.labels(outcome.value) for outcome in Outcome}
_SECONDS = {outcome: metrics.REQUEST_SECONDS.labels(outcome.value) for outcome in Outcome}


def observe_requests(app: Flask) -> None:
    app.before_request(_start_clock)
    app.after_request(_observe)


def _start_clock() -> None:
    request.environ[_STARTED] = time.perf_counter()


def _observe(response: Response) -> Response:
    environ = request.environ
    seconds = time.perf_counter() - environ.get(_STARTED, time.perf_counter())
    status = response.status_code
    outcome = environ.get(OUTCOME)
    if PREDICT in environ and outcome is None:  # no prediction was served
        outcome = Outcome.MISS_FAILED if status >= 500 else Outcome.REJECTED
    record(environ, status, seconds, PREDICT in environ, outcome, environ.get(PAIR))
    return response


def record(
    environ: dict[str, Any],
    status: int,
    seconds: float,
    predict: bool,
    outcome: Outcome | None,
    pair: str | None,
) -> None:
    """One answer's metrics and access-log line (the Flask hook and the hot path)."""
    if predict and outcome is not None:
        _REQUESTS[outcome].inc()
        _SECONDS[outcome].observe(seconds)
        if pair is not None:
            metrics.SERVED_AGE.observe(environ[AGE])
    access_log.write(
        environ.get("REQUEST_METHOD", ""),
        environ.get("PATH_INFO", "")[:200],
        status,
        pair,
        outcome,
        round(seconds * 1000, 3),
        environ.get(AGE),
    )
