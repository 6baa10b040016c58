"""The hot path: a fresh hit of GET /predict/<pair>, answered without Flask.

A hit is the product: it must cost no more than the cheapest Flask view. Werkzeug's
request and response objects, routing and hooks cost more than the rest of the hit, so
a fresh near copy of a known pair, asked for by its canonical name with a plain GET
(no query string, no validator), is answered here, in a few lines of WSGI, with the
answer the Flask view would give (api/answer.py). Its headers change at most once a
second per prediction, so they are prepared once per second and reused. Everything else
(misses, stale answers, 304s, other spellings of a pair, every other route) goes to the
Flask app unchanged, which owns routing and errors. Both record the same metrics and
access-log line.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from api import observe
from api.answer import Answer, prediction_answer, server_timing
from predictions.cache import Outcome
from predictions.model import Prediction

PREFIX = "/predict/"
# Pairs whose prepared answers are kept (see _prepare).
PREPARED_PAIRS = 256

StartResponse = Callable[..., Any]
# (prediction, the whole seconds its headers were made for, its answer)
_Prepared = tuple[Prediction, tuple[int, int], Answer]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class HotPath:
    """WSGI middleware in front of the Flask app (see the module's docstring)."""

    def __init__(self, app: WsgiApp, state: Any) -> None:
        self.app = app
        self.known = state.known
        self.asked = state.asked
        self.cache = state.cache
        self.grace = state.settings.stale_grace_seconds
        self._prepared: dict[str, _Prepared] = {}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if (
            path.startswith(PREFIX)
            and environ.get("REQUEST_METHOD") == "GET"
            and not environ.get("QUERY_STRING")
            and "HTTP_IF_NONE_MATCH" not in environ
        ):
            pair = path[len(PREFIX) :]
            if pair in self.known.pairs:
                started = time.perf_counter()
                prediction = self.cache.near_hit(pair)
                if prediction is not None:
                    # Here, not before: the Flask view records the pairs it answers.
                    self.asked.record(pair)
                    return self._serve(environ, start_response, prediction, started)
        return self.app(environ, start_response)

    def _serve(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        prediction: Prediction,
        started: float,
    ) -> list[bytes]:
        now = self.cache.clock.now()
        answer = self._prepare(prediction, now)
        environ[observe.AGE] = round(now - prediction.computed_at, 3)
        elapsed = time.perf_counter() - started
        start_response("200 OK", [*answer.headers, server_timing(elapsed)])
        observe.record(environ, 200, elapsed, True, Outcome.HIT, prediction.pair)
        return [answer.body]

    def _prepare(self, prediction: Prediction, now: float) -> Answer:
        # Whole seconds of age and of freshness left: every caching header is a
        # function of these (and of the prediction), so they key the prepared answer.
        second = (int(now), int(prediction.fresh_until - now))
        prepared = self._prepared.get(prediction.pair)
        if prepared is not None and prepared[0] is prediction and prepared[1] == second:
            return prepared[2]
        answer = prediction_answer(prediction, Outcome.HIT, now, self.grace)
        if len(self._prepared) >= PREPARED_PAIRS:
            # Reuse pays only for pairs asked many times a second; with thousands of
            # pairs asked in turn, keeping them all would cost kilobytes each for nothing.
            self._prepared.clear()
        self._prepared[prediction.pair] = (prediction, second, answer)
        return answer
