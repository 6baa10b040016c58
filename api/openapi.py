"""The API's OpenAPI 3.1 document, served at /openapi.json.

Written by hand, next to the views it describes, so that it states the contract the
tests hold the API to (schemathesis generates requests from it and checks every answer
against it).
"""

from __future__ import annotations

from typing import Any

from predictions.infra import PAIR_PATTERN
from predictions.model import PREDICTION_FIELDS

MAX_BATCH = 100
# The most pairs in one page of GET /pairs.
MAX_PAGE = 1000
# 1 to MAX_BATCH comma-separated items, the first with a letter or digit.
BATCH_PATTERN = rf"[^,]*[A-Za-z0-9][^,]*(,[^,]*){{0,{MAX_BATCH - 1}}}"

_ERROR = {"$ref": "#/components/schemas/Error"}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds after which the request may succeed",
        "schema": {"type": "string"},
    }
}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def _unavailable(description: str) -> dict[str, Any]:
    return _json(_ERROR, description, headers=_RETRY_AFTER)


def openapi_document() -> dict[str, Any]:
    """The document; the same for every configuration (pairs are listed by /pairs)."""
    pair = {
        "name": "pair",
        "in": "path",
        "required": True,
        "description": "BASE-QUOTE, in any case: ETH-EUR or eth-eur",
        "schema": {"type": "string", "pattern": PAIR_PATTERN},
        "example": "ETH-EUR",
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "prediction-cache",
            "version": "1",
            "description": "Precomputed ML price predictions, served from Redis.",
        },
        "paths": {
            "/predict/{pair}": {
                "get": {
                    "operationId": "predict",
                    "summary": "The latest prediction for a configured pair",
                    "parameters": [pair],
                    "responses": {
                        "200": _json(
                            {"$ref": "#/components/schemas/Prediction"},
                            "The prediction; X-Cache says where it came from",
                            headers={
                                "X-Cache": {
                                    "description": "HIT (cache), MISS (computed), STALE",
                                    "schema": {"type": "string", "enum": ["HIT", "MISS", "STALE"]},
                                }
                            },
                        ),
                        "304": {"description": "Not modified: If-None-Match named its ETag"},
                        "400": _json(_ERROR, "Not a pair (invalid_pair)"),
                        "404": _json(_ERROR, "A pair that is not configured (unknown_pair)"),
                        "503": _unavailable("No prediction can be had right now"),
                    },
                }
            },
            "/predict": {
                "get": {
                    "operationId": "predictMany",
                    "summary": "Several pairs from the cache, in one Redis round trip",
                    "parameters": [
                        {
                            "name": "pairs",
                            "in": "query",
                            "required": True,
                            "description": "1 to 100 comma-separated pairs",
                            "schema": {
                                "type": "string",
                                "pattern": f"^{BATCH_PATTERN}$",
                            },
                            "example": "ETH-EUR,BTC-EUR",
                        }
                    ],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Batch"}, "One item a pair"),
                        "400": _json(_ERROR, "No pairs, or more than 100"),
                    },
                }
            },
            "/pairs": {
                "get": {
                    "operationId": "pairs",
                    "summary": "The known pairs in name order, a page at a time, with the "
                    "age of each cached prediction",
                    "parameters": [
                        {
                            "name": "cursor",
                            "in": "query",
                            "required": False,
                            "description": "The previous page's next_cursor (none or "
                            "empty: the first page)",
                            "schema": {"type": "string", "pattern": f"(^$)|({PAIR_PATTERN})"},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "description": f"Pairs in the page, 1 to {MAX_PAGE}",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_PAGE,
                                "default": MAX_PAGE,
                            },
                        },
                    ],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Pairs"}, "One page"),
                        "400": _json(_ERROR, "A bad cursor or limit"),
                        "503": _unavailable("Redis is unreachable"),
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "summary": "The process is alive",
                    "responses": {"200": _json({"$ref": "#/components/schemas/Status"}, "Alive")},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "summary": "Redis answers",
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Status"}, "Ready"),
                        "503": _unavailable("Redis is unreachable"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics of every API worker, and per-pair freshness",
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition format 0.0.4",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "responses": {"200": _json({"type": "object"}, "The OpenAPI document")},
                }
            },
        },
        "components": {"schemas": _SCHEMAS},
    }


_TIME = {"type": "string", "format": "date-time"}
_SCHEMAS: dict[str, Any] = {
    "Prediction": {
        "type": "object",
        # Every stored field; "stale" is added only to a stale answer.
        "required": sorted(PREDICTION_FIELDS),
        "properties": {
            "pair": {"type": "string", "pattern": PAIR_PATTERN},
            "predicted_price": {"type": "number", "exclusiveMinimum": 0},
            "horizon_seconds": {"type": "integer", "minimum": 1},
            "computed_at": _TIME,
            "fresh_until": _TIME,
            "model_version": {"type": "string", "minLength": 1},
            "data_source": {"type": "string", "minLength": 1},
            "compute_seconds": {"type": "number", "minimum": 0},
            "stale": {
                "type": "boolean",
                "description": "Present and true on a prediction past its freshness",
            },
        },
        "additionalProperties": False,
    },
    "Batch": {
        "type": "object",
        "required": ["items"],
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["pair", "status"],
                    "properties": {
                        "pair": {"type": "string"},
                        "status": {"enum": ["fresh", "stale", "missing", "error"]},
                        "prediction": {"$ref": "#/components/schemas/Prediction"},
                        "error": {"$ref": "#/components/schemas/Error/properties/error"},
                    },
                },
            }
        },
    },
    "Pairs": {
        "type": "object",
        "required": ["pairs", "next_cursor"],
        "properties": {
            "next_cursor": {
                "type": ["string", "null"],
                "description": "Pass as ?cursor= for the next page; null on the last",
            },
            "pairs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["pair", "cached"],
                    "properties": {
                        "pair": {"type": "string"},
                        "cached": {"type": "boolean"},
                        "computed_at": _TIME,
                        "fresh_until": _TIME,
                        "status": {"enum": ["fresh", "stale"]},
                        "age_seconds": {"type": "number"},
                        "fresh_for_seconds": {"type": "number", "minimum": 0},
                        "ttl_seconds": {"type": "number", "exclusiveMinimum": 0},
                        "refresh_seconds": {"type": "number", "exclusiveMinimum": 0},
                    },
                },
            },
        },
    },
    "Status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string"}},
    },
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["status", "code", "message"],
                "properties": {
                    "status": {"type": "integer"},
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                },
                "additionalProperties": False,
            }
        },
        "additionalProperties": False,
    },
}
