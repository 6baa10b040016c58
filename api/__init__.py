"""The read-only HTTP API: create_app() builds it from Settings and a Redis client."""

from __future__ import annotations

from collections.abc import Callable

import redis
from flask import Flask

from api.errors import register_error_handlers
from api.hot_path import HotPath
from api.observe import observe_requests
from api.serving import model_offload
from api.views import ApiState, bp
from predictions import metrics
from predictions.cache import Limits, PredictionCache
from predictions.circuit import CircuitBreaker
from predictions.clock import process_clock
from predictions.near_cache import NearCache
from predictions.predictor import Predictor
from predictions.redis_client import make_redis
from predictions.settings import Settings
from predictions.store import PredictionStore
from predictions.write_feed import WriteFollower


def create_app(
    settings: Settings | None = None,
    redis_client: redis.Redis | None = None,
    predictor: Predictor | None = None,
    clock: Callable[[], float] | None = None,
    follow_writes: bool | None = None,
) -> Flask:
    """Build the API; tests pass their own settings, client, predictor and clock.

    The clock defaults to Redis's, as this process measures it (predictions.clock).
    ``follow_writes`` (default: NEAR_CACHE_FOLLOWS_WRITES, when the client is made
    here) keeps near copies current from the write feed (predictions/write_feed.py).
    """
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    # Only GET and HEAD exist: OPTIONS gets the same JSON 405 as any other method.
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    # No redirects (an HTML body) for "//": every path either matches or is a JSON 404.
    app.url_map.merge_slashes = False
    client = redis_client or make_redis(settings, client_name="prediction-cache-api")
    if clock is None:
        clock = process_clock(client)
    if predictor is None:
        predictor = Predictor.from_settings(settings, clock=clock)
        predictor.models.default_model()  # now: a MODEL that cannot load stops the start
    if follow_writes is None:  # a client of the caller's (tests): unless asked to
        follow_writes = redis_client is None and settings.near_cache_follows_writes
    store = PredictionStore(client, grace_seconds=settings.stale_grace_seconds, clock=clock)
    near = NearCache(settings.near_cache_seconds, clock=clock)
    feed = None
    if follow_writes and settings.near_cache_seconds > 0:
        feed = WriteFollower(store.redis, near, frozenset(settings.pairs))
    app.extensions["predictions"] = ApiState(
        settings=settings,
        pairs=frozenset(settings.pairs),
        cache=PredictionCache(
            store,
            predictor,
            Limits.from_settings(settings),
            near_cache=near,
            breaker=CircuitBreaker(
                settings.circuit_failure_threshold,
                settings.circuit_open_seconds,
                on_change=lambda opened: metrics.CIRCUIT_OPEN.set(int(opened)),
            ),
            clock=clock,
            offload=model_offload(settings.max_concurrent_computes),
            feed=feed,
        ),
    )
    app.register_blueprint(bp)
    register_error_handlers(app)
    observe_requests(app)
    app.wsgi_app = HotPath(app.wsgi_app, app.extensions["predictions"])  # type: ignore[method-assign]
    return app
