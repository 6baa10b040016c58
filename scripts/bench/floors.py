"""Baselines (c) and (d): the floors, what Flask under our gunicorn settings costs at all.

(c) a view answering a constant prediction body; (d) the same view reading that body
with one Redis GET. Neither ever computes: they bound from below what any Flask view
serving a cached prediction can cost.

    gunicorn 'scripts.bench.floors:create_constant_app()'   (reads ./gunicorn.conf.py)
    gunicorn 'scripts.bench.floors:create_redis_get_app()'
"""

from __future__ import annotations

import redis
from flask import Flask, Response, abort

from predictions.settings import Settings
from scripts.bench.baseline import sample_body


def create_constant_app() -> Flask:
    body = sample_body(Settings.from_env())
    app = Flask(__name__)

    @app.get("/predict/<pair>")
    def predict(pair: str) -> Response:
        return Response(body, mimetype="application/json")

    return app


def create_redis_get_app() -> Flask:
    settings = Settings.from_env()
    body = sample_body(settings)
    cache = redis.Redis.from_url(settings.redis_url)
    # No expiry: the floor measures a GET that always finds its value.
    cache.mset({f"bench:floor:{pair}": body for pair in settings.pairs})
    app = Flask(__name__)

    @app.get("/predict/<pair>")
    def predict(pair: str) -> Response:
        found = cache.get(f"bench:floor:{pair}")
        if found is None:
            abort(404)
        return Response(found, mimetype="application/json")

    return app
