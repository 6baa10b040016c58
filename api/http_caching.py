"""HTTP caching headers (RFC 9111, RFC 5861) that every cache in front reads the same way.

Pure functions of a prediction and the time, so that any code serving a prediction (the
Flask view, or a leaner WSGI path) sends the same headers. docs/http-caching.md says
how each cache that was tested reads them; in short:

- The caches users put in front date a copy differently: Varnish from the moment it
  fetched it, hishel and CacheControl from ``Date``, requests-cache from the moment it
  received it, and the client caches ignore ``Age``. So no ``Age`` is sent, and
  ``max-age`` is the freshness *left*, in whole seconds rounded down: however a cache
  dates its copy, it stops using it by ``fresh_until``.
- A fresh body is never to be served past ``fresh_until``: it says
  ``stale-while-revalidate=0, stale-if-error=0`` (without them Varnish applies its
  default grace of 10 s and serves the unmarked body that long while it refetches).
- A stale body (``"stale": true``) may be served until the grace ends, and a shared
  cache should, as that shields the API exactly while it recomputes: ``max-age`` is one
  second (Varnish's builtin VCL does not cache a response whose TTL is 0, so
  ``max-age=0`` would send every request to the API while a pair is stale) and the rest
  of the grace is ``stale-while-revalidate`` and ``stale-if-error``.
- The two bodies of one prediction have distinct validators (ETag and Last-Modified),
  so a cache holding the fresh one never has it confirmed by a 304 once it is stale.
"""

from __future__ import annotations

import functools
import hashlib
import math
from email.utils import formatdate

from werkzeug.http import parse_etags, unquote_etag

from predictions.model import Prediction

# How long a cache may reuse a stale answer before asking again: the API sees at most
# one request per pair and cache each second while a pair is stale, and a client sees
# a recomputed prediction at most this long after it lands.
STALE_MAX_AGE = 1


def etag(prediction: Prediction, stale: bool) -> str:
    """A strong validator of the body: changes with the model, pair, horizon, time and
    whether the body is the fresh one or the one marked stale."""
    identity = (
        f"{prediction.model_version}|{prediction.pair}|{prediction.horizon_seconds}|"
        f"{prediction.computed_at:.3f}{'|stale' if stale else ''}"
    )
    return f'"{hashlib.blake2b(identity.encode(), digest_size=12).hexdigest()}"'


def matches(if_none_match: str, current_etag: str) -> bool:
    """Whether an If-None-Match value names ``current_etag`` (or is ``*``): answer 304.

    RFC 9110 (13.1.2) compares weakly: ``W/"x"`` matches ``"x"``. A value that is not a
    list of entity tags matches nothing.
    """
    if if_none_match == current_etag:  # the usual case: a cache sends back what it has
        return True
    # Werkzeug's parser of the header's list, from its own string (no request needed).
    return parse_etags(if_none_match).contains_weak(unquote_etag(current_etag)[0])


def caching_headers(
    prediction: Prediction, now: float, grace_seconds: float, stale: bool
) -> dict[str, str]:
    """Every caching header of a 200 (or of the 304 that replaces it) at instant ``now``.

    ``stale`` says which body is served: the one marked ``"stale": true`` or the fresh
    one. Nothing here depends on the request.
    """
    if stale:
        left = max(0, math.floor(prediction.fresh_until + grace_seconds - now))
        max_age = min(STALE_MAX_AGE, left)
        beyond = left - max_age
        # The stale body came to be at fresh_until (or now, for a prediction served
        # stale before it because Redis could not be asked): never later than Date.
        modified = _http_date(math.floor(min(prediction.fresh_until, now)))
    else:
        max_age = max(0, math.floor(prediction.fresh_until - now))
        beyond = 0
        modified = _http_date(math.floor(prediction.computed_at))
    return {
        "Cache-Control": _cache_control(max_age, beyond),
        # What max-age says, for HTTP/1.0 caches: max-age wins wherever both are read.
        # Whole seconds from the second now is in, never past what max-age allows.
        "Expires": _http_date(math.floor(now) + max_age),
        "ETag": etag(prediction, stale),
        "Last-Modified": modified,
        # For an nginx edge cache (deploy/nginx), which counts whole seconds and serves
        # an entry through the whole second its expiry names: the last whole second
        # before fresh_until. A stale answer's is in the past, so nginx never serves it
        # from its cache. nginx does not forward it.
        "X-Accel-Expires": f"@{int(prediction.fresh_until) - 1}",
    }


# A few hundred distinct values at most (whole seconds up to the TTL and the grace).
@functools.lru_cache(maxsize=512)
def _cache_control(max_age: int, beyond: int) -> str:
    return f"max-age={max_age}, stale-while-revalidate={beyond}, stale-if-error={beyond}"


@functools.lru_cache(maxsize=256)
def _http_date(seconds: int) -> str:
    # A few distinct seconds are in use at any moment (now, and the next ones).
    return formatdate(seconds, usegmt=True)
