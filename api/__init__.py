"""The read-only HTTP API: create_app() builds it from Settings and a Redis client."""

from __future__ import annotations

import redis
from flask import Flask

from api.errors import register_error_handlers
from api.hot_path import HotPath
from api.observe import observe_requests
from api.serving import model_offload
from api.views import ApiState, bp
from predictions.infra import Clock
from predictions.model import Predictor
from predictions.settings import Settings
from predictions.wiring import wire


def create_app(
    settings: Settings | None = None,
    redis_client: redis.Redis | None = None,
    predictor: Predictor | None = None,
    clock: Clock | None = None,
    follow_writes: bool | None = None,
) -> Flask:
    """Build the API; tests pass their own settings, client, predictor and clock.

    The rest is predictions.wiring's: the clock defaults to Redis's, and
    ``follow_writes`` (the write feed keeping near copies current) to
    NEAR_CACHE_FOLLOWS_WRITES when the client is made here.
    """
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    # Only GET and HEAD exist: OPTIONS gets the same JSON 405 as any other method.
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    # No redirects (an HTML body) for "//": every path either matches or is a JSON 404.
    app.url_map.merge_slashes = False
    wiring = wire(
        settings,
        role="api",
        redis_client=redis_client,
        clock=clock,
        predictor=predictor,
        offload=model_offload(settings.max_concurrent_computes),
        follow_writes=follow_writes,
    )
    if predictor is None:
        # Now: a MODEL that cannot load stops the start.
        wiring.predictor.models.default_model()
    wiring.known.seed()
    if redis_client is None:
        # Now, in the worker process (gunicorn loads the app after its fork): the
        # registry followed, asked pairs sent, and the near copies filled before the
        # first requests. Only for a process's own client: a test's app (given its
        # client) writes nothing behind the test's back.
        wiring.known.ensure_watching()
        wiring.asked.ensure_flushing()
        if wiring.cache.feed is not None:
            wiring.cache.feed.ensure_running()
    state = ApiState(settings=settings, known=wiring.known, asked=wiring.asked, cache=wiring.cache)
    app.extensions["predictions"] = state
    app.register_blueprint(bp)
    register_error_handlers(app)
    observe_requests(app)
    app.wsgi_app = HotPath(app.wsgi_app, state)  # type: ignore[method-assign]
    return app
