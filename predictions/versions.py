"""Model versions in Redis: which one the API serves, and how each one is built.

Predictions are stored per model version (keys.prediction_key). One pointer key names
the active version; next to it, each version's import string, so that every process
(worker, API, a rollout) can build the model that made it. A fresh cache starts with
the MODEL setting's version; after that only a rollout (predictions/rollout.py) moves
the pointer.
"""

from __future__ import annotations

import logging
import threading

import redis

from predictions.keys import active_version_key, check_version, model_import_key
from predictions.model import LoadedModel, ModelLoadError, load_model

log = logging.getLogger(__name__)


def register(client: redis.Redis, model: LoadedModel, import_string: str) -> None:
    """Record how to build ``model``'s version (kept: a rollback may need it)."""
    check_version(model.version)
    if import_string:  # a model handed over in code (tests) has none
        client.set(model_import_key(model.version), import_string)


def activate_if_none(client: redis.Redis, model: LoadedModel, import_string: str) -> str:
    """Make ``model`` the active version if no version is; return the active one."""
    register(client, model, import_string)
    pipe = client.pipeline(transaction=False)
    pipe.set(active_version_key(), model.version, nx=True)
    pipe.get(active_version_key())
    _, active = pipe.execute()
    return str(active.decode() if isinstance(active, bytes) else active)


def read_active(client: redis.Redis) -> str | None:
    raw = client.get(active_version_key())
    if raw is None:
        return None
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class ModelCatalog:
    """Per process: the model of each version, each built once, on first need.

    The process's own MODEL is known from the start; any other version is built from
    the import string its rollout recorded. A version whose import string now builds
    a different version (its artifact was replaced) is refused, never served under
    the wrong name.
    """

    def __init__(self, default: LoadedModel, default_import: str) -> None:
        self.default = default
        self.default_import = default_import
        self._models: dict[str, LoadedModel] = {default.version: default}
        self._lock = threading.Lock()

    def activate_default_if_none(self, client: redis.Redis) -> str:
        return activate_if_none(client, self.default, self.default_import)

    def model(self, client: redis.Redis, version: str) -> LoadedModel:
        """The model of ``version``; ModelLoadError if it cannot be built."""
        found = self._models.get(version)
        if found is not None:
            return found
        with self._lock:  # one build per version, however many threads ask
            found = self._models.get(version)
            if found is not None:
                return found
            raw = client.get(model_import_key(version))
            if raw is None:
                raise ModelLoadError(f"model version {version!r}: no import string recorded")
            import_string = raw.decode() if isinstance(raw, bytes) else str(raw)
            model = load_model(import_string)
            if model.version != version:
                raise ModelLoadError(
                    f"model version {version!r}: {import_string!r} now builds "
                    f"{model.version!r}; roll out that version instead"
                )
            log.info("loaded model version=%s model=%s", version, import_string)
            self._models[version] = model
            return model
