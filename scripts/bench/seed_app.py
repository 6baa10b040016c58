"""Baseline (a): the seed tutorial's cache-aside API, in its style.

FastAPI under uvicorn, one process, as the tutorial runs it. Each prediction is a Redis
hash (HSET, then EXPIRE with the seed's 5 s unless the driver says otherwise; HGETALL
to read it back). A miss computes in the request with no lock, so every request that
finds the key expired runs the model. Beyond the seed: an X-Cache header, so that the
driver counts the answers that waited for the model exactly as it does for ours.

    uvicorn --factory scripts.bench.seed_app:create_app
"""

from __future__ import annotations

import redis
from fastapi import FastAPI, Response
from redis.typing import EncodableT

from scripts.bench.baseline import load_baseline

# HGETALL returns bytes; these fields go back to numbers, the rest stay strings.
NUMBERS = {"predicted_price": float, "horizon_seconds": int, "compute_seconds": float}


def create_app() -> FastAPI:
    settings, predictor = load_baseline()
    cache = redis.Redis.from_url(settings.redis_url)
    expiry_seconds = max(1, round(settings.prediction_ttl_seconds))  # EXPIRE takes seconds
    app = FastAPI()

    # A plain `def`: FastAPI runs it in its thread pool (40 threads), so up to 40 requests
    # run the model at once on a cold key, as in the seed. No response model: the seed
    # returned its dict as it was.
    @app.get("/predict/{pair}", response_model=None)
    def predict(pair: str, response: Response) -> dict[str, object]:
        key = f"bench:seed:{pair}"
        cached = cache.hgetall(key)
        if cached:
            response.headers["X-Cache"] = "HIT"
            return {
                _text(name): NUMBERS.get(_text(name), str)(_text(value))
                for name, value in cached.items()
            }
        prediction = predictor.compute(pair).to_dict()
        # Copied into redis-py's own type: its mapping's key type is invariant.
        fields: dict[EncodableT, EncodableT] = {name: v for name, v in prediction.items()}
        cache.hset(key, mapping=fields)
        cache.expire(key, expiry_seconds)
        response.headers["X-Cache"] = "MISS"
        return prediction

    return app


def _text(raw: bytes | str) -> str:
    """HGETALL's bytes (the client does not decode) as text."""
    return raw.decode() if isinstance(raw, bytes) else raw
