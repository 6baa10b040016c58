"""Per-request metrics and the JSON access log: one place sees every answer.

The views say what they served by leaving it in the WSGI environ (the pair, the
outcome, the prediction's age); the after-request hook turns that and the response's
status into Prometheus samples and one access-log line.
"""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, request

from predictions import metrics

# What the views leave in request.environ for the hook.
PAIR = "prediction_cache.pair"
OUTCOME = "prediction_cache.outcome"
AGE = "prediction_cache.age_seconds"
_STARTED = "prediction_cache.started"

access_log = logging.getLogger("api.access")


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
    pair = environ.get(PAIR)
    if request.endpoint == "predictions.predict":
        if outcome is None:  # no prediction was served
            outcome = "miss_failed" if status >= 500 else "rejected"
        metrics.REQUESTS.labels(outcome).inc()
        metrics.REQUEST_SECONDS.labels(outcome).observe(seconds)
        if pair is not None and AGE in environ:
            # Only configured pairs get here: the label set is bounded.
            metrics.SERVED_AGE.labels(pair).set(environ[AGE])
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(
            "%s %s %s",
            request.method,
            request.path[:200],
            status,
            extra={
                "method": request.method,
                "path": request.path[:200],
                "status": status,
                "pair": pair,
                "outcome": outcome,
                "duration_ms": round(seconds * 1000, 3),
                "age_seconds": environ.get(AGE),
            },
        )
    return response
