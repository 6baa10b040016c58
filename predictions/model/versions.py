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

from predictions.infra.keys import active_version_key, check_version, model_import_key
from predictions.model.contract import LoadedModel, ModelLoadError, load_model

log = logging.getLogger(__name__)


def register(client: redis.Redis, model: LoadedModel, import_string: str | None) -> None:
    """Record how to build ``model``'s version (kept: a rollback may need it).

    A model handed over in code (tests) has no import string: no other process can
    build it, so nothing is recorded.
    """
    check_version(model.version)
    if import_string is not None:
        client.set(model_import_key(model.version), import_string)


def activate_if_none(client: redis.Redis, model: LoadedModel, import_string: str | None) -> str:
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
    """Per process, the one owner of models: each version's, built once, on first need.

    The process's own MODEL is the default; any other version is built from the
    import string its rollout recorded. A version whose import string now builds a
    different version (its artifact was replaced) is refused, never served under the
    wrong name.

    Two ways to get a model: ``model`` builds it in the caller's thread (the API: a
    request waits for it); ``model_if_ready`` builds it in a background thread and
    waits at most a given time (the worker: a slow load, a large artifact, never runs
    into Celery's task time limits; the batch is skipped until the model is there).
    """

    def __init__(self, default: str | LoadedModel) -> None:
        """``default``: MODEL's import string (built on first need), or a model handed
        over in code (tests): with no import string, no other process can build it."""
        self._default: LoadedModel | None = None  # until built
        self._default_import: str | None = None
        self._models: dict[str, LoadedModel] = {}
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Thread] = {}  # import string -> its build
        self._built: dict[str, LoadedModel] = {}
        self._failed: dict[str, ModelLoadError] = {}
        self._warned_inactive = False
        if isinstance(default, LoadedModel):
            self._keep_default(default)
        else:
            self._default_import = default

    @property
    def default(self) -> LoadedModel | None:
        """The default model, if built yet."""
        return self._default

    def default_model(self) -> LoadedModel:
        """The default model, built now if need be; ModelLoadError if it cannot be."""
        with self._lock:
            default = self._default
            if default is None:
                if self._default_import is None:  # never: a model handed over is kept at once
                    raise ModelLoadError("this catalog has no default model")
                default = self._keep_default(load_model(self._default_import))
            return default

    def activate_default_if_none(self, client: redis.Redis) -> str:
        return activate_if_none(client, self.default_model(), self._default_import)

    def warn_if_default_inactive(self, active: str | None) -> None:
        """Say once per process that MODEL is not the version the cache serves."""
        default = self._default
        if default is None or default.version == active or self._warned_inactive:
            return
        self._warned_inactive = True
        log.warning(
            "MODEL builds version %s, but the cache serves version %s (rolled out, or "
            "from an earlier run): refreshing %s; `make rollout MODEL=...` switches",
            default.version,
            active,
            active,
        )

    def model(self, client: redis.Redis, version: str) -> LoadedModel:
        """The model of ``version``, built now if need be; ModelLoadError if it cannot be."""
        found = self._models.get(version)
        if found is not None:
            return found
        with self._lock:  # one build per version, however many threads ask
            found = self._models.get(version)
            if found is not None:
                return found
            model = _build(self._import_string(client, version), version)
            self._models[version] = model
            return model

    def default_if_ready(self, wait_seconds: float) -> LoadedModel | None:
        """The default model, if built within ``wait_seconds`` (in the background)."""
        if self._default is None and self._default_import is not None:
            model = self._build_in_background(self._default_import, None, wait_seconds)
            if model is not None:
                with self._lock:
                    self._keep_default(model)
        return self._default

    def model_if_ready(
        self, client: redis.Redis, version: str, wait_seconds: float
    ) -> LoadedModel | None:
        """The model of ``version`` if built within ``wait_seconds``, else None (its build
        goes on); ModelLoadError if the build failed (the next call tries again)."""
        found = self._models.get(version)
        if found is not None:
            return found
        import_string = self._import_string(client, version)
        return self._build_in_background(import_string, version, wait_seconds)

    def _import_string(self, client: redis.Redis, version: str) -> str:
        default = self._default
        if default is not None and version == default.version and self._default_import is not None:
            return self._default_import
        raw = client.get(model_import_key(version))
        if raw is None:
            raise ModelLoadError(f"model version {version!r}: no import string recorded")
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    def _keep_default(self, model: LoadedModel) -> LoadedModel:
        """The default: ``model`` unless one was kept first (the caller holds the lock,
        or no other thread has the catalog yet)."""
        if self._default is not None:
            return self._default
        self._default = model
        self._models.setdefault(model.version, model)
        return model

    def _build_in_background(
        self, import_string: str, version: str | None, wait_seconds: float
    ) -> LoadedModel | None:
        with self._lock:
            if import_string in self._built:
                return self._built[import_string]
            error = self._failed.pop(import_string, None)
            if error is not None:
                raise error
            thread = self._loading.get(import_string)
            if thread is None:
                thread = threading.Thread(
                    target=self._build_and_keep,
                    args=(import_string, version),
                    name=f"load-model-{version or 'default'}",
                    daemon=True,
                )
                self._loading[import_string] = thread
                thread.start()
        thread.join(wait_seconds)
        with self._lock:
            if import_string in self._failed:
                raise self._failed.pop(import_string)
            return self._built.get(import_string)

    def _build_and_keep(self, import_string: str, version: str | None) -> None:
        try:
            model = _build(import_string, version)
        except ModelLoadError as exc:
            with self._lock:
                self._failed[import_string] = exc
                del self._loading[import_string]
            return
        with self._lock:
            self._built[import_string] = model
            self._models[model.version] = model
            del self._loading[import_string]


def _build(import_string: str, version: str | None) -> LoadedModel:
    """Build a model, checking that it is ``version`` (when one is expected)."""
    model = load_model(import_string)
    if version is not None and model.version != version:
        raise ModelLoadError(
            f"model version {version!r}: {import_string!r} now builds "
            f"{model.version!r}; roll out that version instead"
        )
    log.info("loaded model version=%s model=%s", model.version, import_string)
    return model
