"""The API's routes: thin views that read the cache and shape the answer."""

from __future__ import annotations

import time

import orjson
from flask import Blueprint, Response, current_app, request

from api.errors import InvalidPair, Unavailable, UnknownPair
from api.http_caching import caching_headers
from api.openapi import openapi_document
from predictions import keys
from predictions.cache import Outcome, PredictionCache
from predictions.settings import Settings

bp = Blueprint("predictions", __name__)


def _cache() -> PredictionCache:
    cache: PredictionCache = current_app.extensions["prediction_cache"]
    return cache


def _settings() -> Settings:
    settings: Settings = current_app.extensions["prediction_settings"]
    return settings


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status=status, mimetype="application/json")


def configured_pair(text: str) -> str:
    """The canonical pair for ``text``: 400 if malformed, 404 if not configured."""
    configured: frozenset[str] = current_app.extensions["prediction_pairs"]
    if text in configured:  # the common case: already canonical
        return text
    try:
        pair = keys.canonical_pair(text)
    except keys.InvalidPair as exc:
        raise InvalidPair(str(exc)) from None
    if pair not in configured:
        raise UnknownPair(f"{pair} is not one of the configured pairs (see /pairs)")
    return pair


@bp.get("/predict/<pair>")
def predict(pair: str) -> Response:
    started = time.perf_counter()
    cache = _cache()
    lookup = cache.get(configured_pair(pair))
    prediction = lookup.prediction
    headers = caching_headers(prediction, cache.clock(), _settings().stale_grace_seconds)
    if request.if_none_match.contains(headers["ETag"].strip('"')):
        response = Response(status=304)
    elif lookup.outcome is Outcome.STALE:
        response = _json(prediction.to_dict() | {"stale": True})
    else:
        response = Response(prediction.to_json(), mimetype="application/json")
    response.headers.update(headers)
    response.headers["X-Cache"] = lookup.outcome.value
    # The time spent in the API on this answer, apart from HTTP and the network, which
    # a client's clock includes (W3C Server Timing).
    elapsed_ms = (time.perf_counter() - started) * 1000
    response.headers["Server-Timing"] = f"cache;dur={elapsed_ms:.3f}"
    return response


@bp.get("/pairs")
def pairs() -> Response:
    now = time.time()
    found = _cache().store.read_many(_settings().pairs)
    items = []
    for pair, prediction in found.items():
        item: dict[str, object] = {"pair": pair, "cached": prediction is not None}
        if prediction is not None:
            item |= {
                "computed_at": prediction.to_dict()["computed_at"],
                "expires_at": prediction.to_dict()["expires_at"],
                "age_seconds": round(now - prediction.computed_at, 3),
                "expires_in_seconds": round(prediction.expires_at - now, 3),
            }
        items.append(item)
    return _json({"pairs": items})


@bp.get("/openapi.json")
def openapi() -> Response:
    return _json(openapi_document())


@bp.get("/healthz")
def healthz() -> Response:
    return _json({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    try:
        _cache().store.redis.ping()
    except Exception as exc:  # any failure to ping means: not ready
        raise Unavailable(f"the prediction cache is unreachable: {exc}", "not_ready") from None
    return _json({"status": "ready"})
