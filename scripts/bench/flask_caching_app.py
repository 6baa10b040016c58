"""Baseline (b): Flask-Caching's ``@cache.memoize`` on Redis, under our gunicorn settings.

The usual way to cache a slow function in Flask: the model call is memoized for
PREDICTION_TTL_SECONDS (the seed's 5 s unless the driver says otherwise). A hit costs
Flask-Caching's two round trips (the function's version key, then the value) and an
unpickling; a miss computes in the request, with no lock.

    gunicorn 'scripts.bench.flask_caching_app:create_app()'   (reads ./gunicorn.conf.py)
"""

from __future__ import annotations

from flask import Flask, Response, g, jsonify
from flask_caching import Cache

from scripts.bench.baseline import load_baseline


def create_app() -> Flask:
    settings, predictor = load_baseline()
    app = Flask(__name__)
    app.config.update(CACHE_TYPE="RedisCache", CACHE_REDIS_URL=settings.redis_url)
    cache = Cache(app)

    @cache.memoize(timeout=max(1, round(settings.prediction_ttl_seconds)))
    def predict_price(pair: str) -> dict[str, object]:
        g.computed = True  # runs only on a miss
        return predictor.compute(pair).to_dict()

    @app.get("/predict/<pair>")
    def predict(pair: str) -> Response:
        response = jsonify(predict_price(pair))
        response.headers["X-Cache"] = "MISS" if g.get("computed") else "HIT"
        return response

    return app
