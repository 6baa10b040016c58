"""The baselines ours is compared with: app factories reading our settings from the
environment, started by targets.py. A model run sleeps the model's latency, answers a body
of our prediction's shape and logs the line our model runs log, which the driver counts."""

from __future__ import annotations

import time

import redis
from fastapi import FastAPI, Response
from flask import Flask, abort, g, jsonify
from flask import Response as FlaskResponse
from flask_caching import Cache
from redis.typing import EncodableT

from predictions.settings import Settings
from tests.harness.doubles import make_prediction

# HGETALL returns strings: these fields go back to numbers.
NUMBERS = {"predicted_price": float, "horizon_seconds": int, "compute_seconds": float}


def compute(settings: Settings, pair: str) -> dict[str, object]:
    """One model run: the model's latency, then a prediction body."""
    started = time.time()
    time.sleep(settings.simulated_model_latency_seconds)
    print(f"computed prediction pair={pair} by a baseline", flush=True)
    now = time.time()
    took, fresh = now - started, now + settings.prediction_ttl_seconds
    return make_prediction(
        pair=pair, computed_at=now, fresh_until=fresh, compute_seconds=took
    ).to_dict()


def seed_app() -> FastAPI:
    """Tutorial-style cache-aside: FastAPI under uvicorn, a Redis hash per pair (HSET,
    then EXPIRE), computed in the request on a miss, no lock."""
    settings = Settings.from_env()
    cache = redis.Redis.from_url(settings.redis_url, decode_responses=True)
    expiry = max(1, round(settings.prediction_ttl_seconds))
    app = FastAPI()

    # A plain `def`: FastAPI runs it in its pool of 40 threads, so up to 40 requests run
    # the model at once on a cold key.
    @app.get("/predict/{pair}", response_model=None)
    def predict(pair: str, response: Response) -> dict[str, object]:
        key = f"bench:seed:{pair}"
        cached = {str(k): str(v) for k, v in cache.hgetall(key).items()}
        if cached:
            response.headers["X-Cache"] = "HIT"
            return {name: NUMBERS.get(name, str)(value) for name, value in cached.items()}
        prediction = compute(settings, pair)
        fields: dict[EncodableT, EncodableT] = {k: v for k, v in prediction.items()}  # type: ignore[misc]
        cache.hset(key, mapping=fields)
        cache.expire(key, expiry)
        response.headers["X-Cache"] = "MISS"
        return prediction

    return app


def flask_caching_app() -> Flask:
    """Flask-Caching's @cache.memoize on Redis: two round trips and an unpickling a hit,
    a computation in the request on a miss, no lock."""
    settings = Settings.from_env()
    app = Flask(__name__)
    app.config.update(CACHE_TYPE="RedisCache", CACHE_REDIS_URL=settings.redis_url)
    cache = Cache(app)

    @cache.memoize(timeout=max(1, round(settings.prediction_ttl_seconds)))
    def predict_price(pair: str) -> dict[str, object]:
        g.computed = True  # runs only on a miss
        return compute(settings, pair)

    @app.get("/predict/<pair>")
    def predict(pair: str) -> FlaskResponse:
        response = jsonify(predict_price(pair))
        response.headers["X-Cache"] = "MISS" if g.get("computed") else "HIT"
        return response

    return app


def constant_app() -> Flask:
    """The floor: a Flask view answering a constant prediction body."""
    body = make_prediction(pair=Settings.from_env().pairs[0]).to_json()
    app = Flask(__name__)
    app.get("/predict/<pair>")(lambda pair: FlaskResponse(body, mimetype="application/json"))
    return app


def redis_get_app() -> Flask:
    """The floor with one Redis GET: the same body, read from Redis by its pair."""
    settings = Settings.from_env()
    cache = redis.Redis.from_url(settings.redis_url)
    # No expiry: the floor measures a GET that always finds its value.
    cache.mset({f"bench:floor:{p}": make_prediction(pair=p).to_json() for p in settings.pairs})
    app = Flask(__name__)

    @app.get("/predict/<pair>")
    def predict(pair: str) -> FlaskResponse:
        found = cache.get(f"bench:floor:{pair}")
        if found is None:
            abort(404)
        return FlaskResponse(found, mimetype="application/json")

    return app
