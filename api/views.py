"""The API's routes: thin views that read the cache and shape the answer."""

from __future__ import annotations

import bisect
import dataclasses
import re
import time
from collections.abc import Mapping, Sequence

import orjson
from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import BadRequest, HTTPException

from api import observe
from api.answer import prediction_answer, server_timing
from api.errors import BadPairRequest, PairNotFound, RetryLater, error_code
from api.openapi import BATCH_PATTERN, MAX_BATCH, MAX_PAGE, openapi_document
from predictions.cache import Outcome, PredictionCache
from predictions.infra import InvalidPair, canonical_pair, metrics, read_beat_tick
from predictions.registry import AskedPairs, KnownPairs
from predictions.settings import Settings

bp = Blueprint("predictions", __name__)


@dataclasses.dataclass(frozen=True, slots=True)
class ApiState:
    """What the views need, kept on the app (one lookup per request, not several)."""

    settings: Settings
    known: KnownPairs
    asked: AskedPairs
    cache: PredictionCache


def _state() -> ApiState:
    state: ApiState = current_app.extensions["predictions"]
    return state


def _json(data: object, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status=status, mimetype="application/json")


def known_pair(text: str, known: KnownPairs) -> str:
    """The canonical pair for ``text``: 400 if malformed, 404 if not a known pair."""
    pairs = known.pairs
    if text in pairs:  # the common case: already canonical
        return text
    try:
        pair = canonical_pair(text)
    except InvalidPair as exc:
        raise BadPairRequest(str(exc)) from None
    if pair not in pairs:
        raise PairNotFound(f"{pair} is not one of the known pairs (see /pairs)")
    return pair


@bp.get("/predict/<pair>")
def predict(pair: str) -> Response:
    started = time.perf_counter()
    environ = request.environ
    environ[observe.PREDICT] = True
    state = _state()
    known = known_pair(pair, state.known)
    state.asked.record(known)
    lookup = state.cache.get(known)
    prediction = lookup.prediction
    now = state.cache.clock.now()
    environ[observe.PAIR] = prediction.pair
    environ[observe.OUTCOME] = lookup.outcome
    environ[observe.AGE] = round(now - prediction.computed_at, 3)
    answer = prediction_answer(
        prediction,
        lookup.outcome,
        now,
        state.settings.stale_grace_seconds,
        environ.get("HTTP_IF_NONE_MATCH"),
    )
    response = Response(answer.body, answer.status, answer.headers)
    response.headers.set(*server_timing(time.perf_counter() - started))
    return response


# The API accepts exactly the batches its OpenAPI document allows.
_BATCH = re.compile(BATCH_PATTERN)


@bp.get("/predict")
def predict_many() -> Response:
    """Several pairs at once, from the cache only: one Redis round trip, no computing."""
    raw = request.args.get("pairs", "")
    if not _BATCH.fullmatch(raw):
        raise BadRequest(f"pairs: give 1 to {MAX_BATCH} comma-separated pairs")
    texts = [text.strip() for text in raw.split(",") if text.strip()]
    state = _state()
    items: list[dict[str, object]] = []
    wanted: list[str] = []
    for text in texts:
        try:
            pair = known_pair(text, state.known)
        except (BadPairRequest, PairNotFound) as error:
            items.append({"pair": text[:40], "status": "error", "error": _item_error(error)})
            continue
        items.append({"pair": pair})
        if pair not in wanted:
            wanted.append(pair)
            state.asked.record(pair)
    found = state.cache.peek_many(wanted)
    for item in items:
        if "status" in item:
            continue
        lookup = found[str(item["pair"])]
        if lookup is None:
            item["status"] = "missing"  # GET /predict/<pair> computes it
        elif lookup.outcome is Outcome.STALE:
            item |= {"status": "stale", "prediction": lookup.prediction.to_dict() | {"stale": True}}
        else:
            item |= {"status": "fresh", "prediction": lookup.prediction.to_dict()}
    response = _json({"items": items})
    response.headers["Cache-Control"] = "no-cache"
    return response


def _item_error(error: HTTPException) -> dict[str, object]:
    return {
        "status": error.code,
        "code": error_code(error),
        "message": error.description,
    }


@bp.get("/pairs")
def pairs() -> Response:
    """The known pairs in name order, a page at a time, with each one's cached state."""
    state = _state()
    page, next_cursor = _page(state.known.sorted_pairs())
    now = state.cache.clock.now()
    found = state.cache.store.read_many(page)
    items = []
    for pair, prediction in found.predictions.items():
        item: dict[str, object] = {"pair": pair, "cached": prediction is not None}
        if prediction is not None:
            item |= {
                "status": "fresh" if prediction.is_fresh(now) else "stale",
                "computed_at": prediction.to_dict()["computed_at"],
                "fresh_until": prediction.to_dict()["fresh_until"],
                "age_seconds": round(now - prediction.computed_at, 3),
                "fresh_for_seconds": round(max(0.0, prediction.fresh_until - now), 3),
            }
        freshness = state.known.freshness(pair)
        item |= {
            "ttl_seconds": freshness.ttl_seconds,
            "refresh_seconds": freshness.refresh_seconds,
        }
        items.append(item)
    response = _json({"pairs": items, "next_cursor": next_cursor})
    response.headers["Cache-Control"] = "no-cache"
    return response


_DIGITS = re.compile(r"[0-9]{1,7}")


def _page(ordered: list[str]) -> tuple[list[str], str | None]:
    """The page ``?cursor=&limit=`` asks for, and the cursor of the next one (None at
    the end). The cursor is the last pair of the previous page: a page stays right
    while pairs are added or removed around it."""
    raw_limit = request.args.get("limit", str(MAX_PAGE))
    # ASCII digits only: str.isdigit and int() take other scripts' digits too.
    if not _DIGITS.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= MAX_PAGE:
        raise BadRequest(f"limit: give a whole number from 1 to {MAX_PAGE}")
    limit = int(raw_limit)
    cursor = request.args.get("cursor", "")
    start = 0
    if cursor:  # none or empty: the first page
        try:
            start = bisect.bisect_right(ordered, canonical_pair(cursor))
        except InvalidPair:
            raise BadRequest("cursor: give the next_cursor of the previous page") from None
    page = ordered[start : start + limit]
    more = start + limit < len(ordered)
    return page, page[-1] if more and page else None


@bp.get("/metrics")
def prometheus_metrics() -> Response:
    """Prometheus text format: every API worker's counters, plus the pairs' freshness."""
    state = _state()
    store = state.cache.store

    def read_freshness() -> tuple[
        Mapping[str, int], Sequence[tuple[str, float | None]], float | None
    ]:
        now = state.cache.clock.now()
        stored = store.freshness(
            state.known.sorted_pairs(), now, state.settings.metrics_max_pair_series
        )
        return stored.counts, stored.worst, read_beat_tick(store.redis)

    collector = metrics.FreshnessCollector(read_freshness, state.cache.clock.now)
    # content_type, not mimetype: Werkzeug would append a second charset to text/plain.
    return Response(metrics.exposition(collector), content_type=metrics.CONTENT_TYPE)


@bp.get("/openapi.json")
def openapi() -> Response:
    return _json(openapi_document())


@bp.get("/healthz")
def healthz() -> Response:
    return _json({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    try:
        _state().cache.store.redis.ping()
    except Exception as exc:  # any failure to ping means: not ready
        raise RetryLater(f"the prediction cache is unreachable: {exc}", "not_ready") from None
    return _json({"status": "ready"})
