"""A prediction's answer: status, headers and body, built in one place.

The hot path (api/hot_path.py) and the Flask view (api/views.py) both answer with
``prediction_answer``, so a hit is the same bytes whichever serves it; only
Server-Timing (the time each took) is added by the caller.
"""

from __future__ import annotations

from typing import NamedTuple

import orjson

from api.http_caching import caching_headers, matches
from predictions.cache import Outcome
from predictions.model import Prediction

JSON = ("Content-Type", "application/json")


class Answer(NamedTuple):
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def prediction_answer(
    prediction: Prediction,
    outcome: Outcome,
    now: float,
    grace_seconds: float,
    if_none_match: str | None = None,
) -> Answer:
    """The answer to GET /predict/<pair> serving ``prediction`` at instant ``now``.

    A STALE one is the body marked ``"stale": true``, with its own validators. If
    ``if_none_match`` names the body's ETag: a 304 with the headers the 200 would
    carry, less those of the body (RFC 9110 15.4.5: no Content-Type, Content-Length or
    Last-Modified), so that a cache updates its copy with them.
    """
    stale = outcome is Outcome.STALE
    caching = caching_headers(prediction, now, grace_seconds, stale)
    cache = ("X-Cache", outcome.header)
    if if_none_match and matches(if_none_match, caching["ETag"]):
        del caching["Last-Modified"]
        return Answer(304, [*caching.items(), cache], b"")
    if stale:
        body = orjson.dumps(prediction.to_dict() | {"stale": True})
    else:
        body = prediction.to_json()
    headers = [JSON, ("Content-Length", str(len(body))), *caching.items(), cache]
    return Answer(200, headers, body)


def server_timing(seconds: float) -> tuple[str, str]:
    """The time spent in the API on an answer, apart from HTTP and the network, which
    a client's clock includes (W3C Server Timing)."""
    return ("Server-Timing", f"cache;dur={seconds * 1000:.3f}")
