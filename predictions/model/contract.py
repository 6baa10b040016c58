"""The model contract, and loading a model by import string.

A model is anything with a string ``version`` and a way to predict one pair:

- an object (or a class, instantiated once with no arguments) with
  ``predict(pair, prices)`` returning the price ``horizon`` seconds after the last
  price in ``prices``; it may also take ``horizon_seconds`` as a keyword (it then gets
  PREDICTION_HORIZON_SECONDS), and may offer ``predict_many(windows)`` (a mapping of
  pair to prices in, a mapping of pair to price out) for batches;
- or a plain function ``f(pair, prices)`` with a ``version`` attribute.

``load_model`` wraps whichever it is in a LoadedModel, so the rest of the service
calls one shape: ``predict(pair, prices, horizon)`` and ``predict_many(windows,
horizon)``. Each process builds each model version once (ModelCatalog).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from predictions.model.market_data import PriceWindow


@runtime_checkable
class Model(Protocol):
    """The smallest model: a version and one prediction at a time."""

    version: str

    def predict(self, pair: str, prices: PriceWindow) -> float:
        """Predict one price; any exception, NaN or non-positive value is a failure."""
        ...


class ModelLoadError(ValueError):
    """The MODEL import string does not name a usable model."""


class LoadedModel:
    """A user's model behind one calling convention, whatever shape it came in."""

    def __init__(self, model: Any, name: str = "model") -> None:
        version = getattr(model, "version", None)
        if not isinstance(version, str) or not version:
            raise ModelLoadError(f"MODEL: {name} has no non-empty string 'version'")
        predict = getattr(model, "predict", None)
        if predict is None and callable(model) and not isinstance(model, type):
            predict = model  # a plain function
        if not callable(predict):
            raise ModelLoadError(f"MODEL: {name} has no 'predict' method and is not callable")
        self.model = model
        self.version: str = version
        self._predict: Callable[..., Any] = predict
        self._predict_horizon = _takes_horizon(predict)
        many = getattr(model, "predict_many", None)
        self._predict_many: Callable[..., Any] | None = many if callable(many) else None
        self._many_horizon = many is not None and _takes_horizon(many)

    @property
    def batches(self) -> bool:
        """Whether the model predicts many pairs in one call."""
        return self._predict_many is not None

    def predict(self, pair: str, prices: PriceWindow, horizon_seconds: int) -> float:
        predict = self._current_predict()
        if self._predict_horizon:
            return predict(pair, prices, horizon_seconds=horizon_seconds)  # type: ignore[no-any-return]
        return predict(pair, prices)  # type: ignore[no-any-return]

    def _current_predict(self) -> Callable[..., Any]:
        # Looked up on every call, so that a model that replaces its own predict
        # (a wrapper added at run time) is called as it is now.
        predict = getattr(self.model, "predict", None)
        if predict is None:
            return self._predict
        if getattr(predict, "__func__", predict) is not getattr(
            self._predict, "__func__", self._predict
        ):
            self._predict, self._predict_horizon = predict, _takes_horizon(predict)
        return predict  # type: ignore[no-any-return]

    def predict_many(
        self, windows: Mapping[str, PriceWindow], horizon_seconds: int
    ) -> Mapping[str, float]:
        """Every pair's price: one batch call if the model has one, else one by one."""
        if self._predict_many is None:
            return {pair: self.predict(pair, w, horizon_seconds) for pair, w in windows.items()}
        if self._many_horizon:
            result = self._predict_many(windows, horizon_seconds=horizon_seconds)
        else:
            result = self._predict_many(windows)
        if not isinstance(result, Mapping):
            raise TypeError(f"predict_many returned {type(result).__name__}, not a mapping")
        return result


def _takes_horizon(function: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # a builtin or C callable: call it plainly
        return False
    return "horizon_seconds" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def import_model(import_string: str) -> Any:
    """Import ``package.module:attribute`` (cheap: nothing is built or loaded)."""
    module_name, _, attribute = import_string.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ModelLoadError(f"MODEL: cannot import {import_string!r}: {exc}") from exc


def load_model(import_string: str) -> LoadedModel:
    """Import the model and build it (a class is instantiated without arguments)."""
    target = import_model(import_string)
    try:
        model = target() if isinstance(target, type) else target
    except Exception as exc:  # a user's constructor: say which model failed, and why
        raise ModelLoadError(f"MODEL: building {import_string!r} failed: {exc!r}") from exc
    return LoadedModel(model, repr(import_string))
