"""HTTP caching headers (RFC 9111, RFC 5861) that say exactly how fresh an answer is.

``max-age`` is the prediction's whole fresh lifetime and ``Age`` its age now, so
max-age minus Age is the freshness left, for any client, proxy or CDN; the stale-*
extensions allow serving it, marked stale, for the same grace the API itself uses.
"""

from __future__ import annotations

import functools
import hashlib
from email.utils import formatdate

from predictions.prediction import Prediction


def etag(prediction: Prediction) -> str:
    """A strong validator: changes whenever the model, pair, horizon or time does."""
    identity = (
        f"{prediction.model_version}|{prediction.pair}|"
        f"{prediction.horizon_seconds}|{prediction.computed_at:.3f}"
    )
    return '"' + hashlib.blake2b(identity.encode(), digest_size=12).hexdigest() + '"'


@functools.lru_cache(maxsize=4096)
def _fixed_headers(prediction: Prediction, grace: int) -> tuple[tuple[str, str], ...]:
    # Everything but Age is fixed for a prediction: computed once, not per request.
    # (Bounded: about two entries per configured pair live at once.)
    lifetime = max(0, round(prediction.fresh_until - prediction.computed_at))
    return (
        (
            "Cache-Control",
            f"max-age={lifetime}, stale-while-revalidate={grace}, stale-if-error={grace}",
        ),
        ("Last-Modified", formatdate(prediction.computed_at, usegmt=True)),
        ("ETag", etag(prediction)),
        # For an nginx edge cache (deploy/nginx): nginx ignores Age, so max-age alone
        # would keep a prediction there past its freshness. nginx counts whole seconds
        # and serves an entry through the whole second its expiry names, so the last
        # whole second before fresh_until is named. nginx does not forward it.
        ("X-Accel-Expires", f"@{int(prediction.fresh_until) - 1}"),
    )


def caching_headers(prediction: Prediction, now: float, grace_seconds: float) -> dict[str, str]:
    headers = dict(_fixed_headers(prediction, int(grace_seconds)))
    headers["Age"] = str(max(0, int(now - prediction.computed_at)))
    return headers
