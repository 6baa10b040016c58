"""Roll a model version out, or back: precompute every pair, then flip atomically.

    python -m predictions.rollout package.module:Model    (make rollout MODEL=...)
    python -m predictions.rollout --rollback              (make rollback)

1. Build the model and record its import string under its version, so that every
   worker and API process can build it too.
2. Compute every configured pair with it and store the predictions under its version
   (the API does not read them yet). Any failure stops here: nothing was flipped.
3. Mark the flip pending, and wait a little longer than an API process may answer
   from its near copy (NEAR_CACHE_SECONDS, plus a Redis timeout): from then on every
   API process reads Redis for every request.
4. Flip: in one MULTI/EXEC, the active version becomes the new one, the old one
   becomes the previous one (what --rollback returns to), and the mark is removed.

Every response before the flip carries the old version, every response after it the
new one, and none misses: the new predictions were there before the flip. Refreshes
follow the active version from their next batch on; the old version's keys, no longer
refreshed, expire on their own. A rollback is a rollout of the previous version (its
predictions are computed again: they may have expired).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence

import redis

from predictions.cache import FEED_CHANNEL, PredictionStore, state_message
from predictions.infra import check_version, configure_logging, redact
from predictions.infra.keys import (
    active_version_key,
    flip_pending_key,
    model_import_key,
    previous_version_key,
)
from predictions.model import (
    LoadedModel,
    ModelLoadError,
    Prediction,
    Predictor,
    load_model,
    read_active,
    register,
)
from predictions.registry import recently_asked
from predictions.settings import Settings
from predictions.wiring import Wiring, wire

Say = Callable[[str], object]


class RolloutFailed(RuntimeError):
    """The rollout stopped before the flip: the active version is unchanged."""


def flip_wait_seconds(settings: Settings) -> float:
    """How long after marking the flip pending no API process serves a near copy."""
    return settings.near_cache_seconds + settings.redis_socket_timeout_seconds + 0.2


def rollout(
    wiring: Wiring,
    import_string: str,
    say: Say = print,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Make the model ``import_string`` builds the active version; return its version."""
    settings, client = wiring.settings, wiring.redis
    try:
        model = load_model(import_string)
        check_version(model.version)
    except (ModelLoadError, ValueError) as exc:
        raise RolloutFailed(str(exc)) from exc
    active = read_active(client)
    if active == model.version:
        say(f"{model.version} is already the active version: nothing to do")
        return model.version
    register(client, model, import_string)
    say(f"rolling out {model.version} ({import_string}); active now: {active or 'none'}")

    predictor, store, clock = wiring.predictor, wiring.store, wiring.clock
    wait = flip_wait_seconds(settings)
    wiring.known.reload_if_changed()
    pairs = wiring.known.sorted_pairs()
    if settings.precompute == "asked":  # the others are computed when next asked
        pairs = recently_asked(client, clock.now(), pairs, wiring.known)
    predictions = _precompute(predictor, store, model, pairs)
    say(f"precomputed {len(pairs)} pairs with {model.version}")

    with client.pipeline(transaction=True) as pipe:
        pipe.set(flip_pending_key(), model.version, px=int((wait + 60) * 1000))
        # API processes following the write feed stop serving near copies on this.
        pipe.publish(FEED_CHANNEL, state_message(active, True))
        pipe.execute()
    sleep(wait)
    # Anything that would go stale before the flip lands is computed again first.
    soon = clock.now() + 1.0
    due = [p.pair for p in predictions if p.fresh_until <= soon]
    if due:
        _precompute(predictor, store, model, due)
    _flip(client, active, model.version)
    say(f"flipped: the API now serves {model.version} (rollback: make rollback)")
    return model.version


def rollback(wiring: Wiring, say: Say = print) -> str:
    """Roll out the version that was active before the last flip."""
    client = wiring.redis
    raw = client.get(previous_version_key())
    if raw is None:
        raise RolloutFailed("no previous version to roll back to")
    previous = raw.decode() if isinstance(raw, bytes) else str(raw)
    import_string = client.get(model_import_key(previous))
    if import_string is None:
        raise RolloutFailed(f"no import string recorded for version {previous!r}")
    text = import_string.decode() if isinstance(import_string, bytes) else str(import_string)
    say(f"rolling back to {previous}")
    return rollout(wiring, text, say)


def _precompute(
    predictor: Predictor, store: PredictionStore, model: LoadedModel, pairs: Sequence[str]
) -> list[Prediction]:
    predictions, failures = predictor.compute_many(pairs, model)
    if failures:
        first = "; ".join(f"{pair}: {why}" for pair, why in list(failures.items())[:3])
        raise RolloutFailed(f"{len(failures)} of {len(pairs)} pairs failed ({first})")
    store.write_many(predictions, store.clock.now())
    # Stored, or a newer one already is (a refresh of the same version): check both.
    missing = [p for p in pairs if store.read_version(p, model.version) is None]
    if missing:
        raise RolloutFailed(f"not stored: {', '.join(missing[:5])}")
    return predictions


def _flip(client: redis.Redis, expected_active: str | None, version: str) -> None:
    """Swap the active version in one transaction, unless it moved meanwhile."""
    with client.pipeline(transaction=True) as pipe:
        try:
            pipe.watch(active_version_key())  # type: ignore[no-untyped-call]
            if read_active(pipe) != expected_active:
                raise RolloutFailed("another rollout changed the active version meanwhile")
            pipe.multi()
            if expected_active is not None:
                pipe.set(previous_version_key(), expected_active)
            pipe.set(active_version_key(), version)
            pipe.delete(flip_pending_key())
            pipe.publish(FEED_CHANNEL, state_message(version, False))
            pipe.execute()
        except redis.WatchError:
            raise RolloutFailed("another rollout changed the active version meanwhile") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m predictions.rollout",
        description="Precompute every pair with a model version, then make it the one "
        "the API serves (or go back to the previous one).",
    )
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("model", nargs="?", help="the model, as package.module:attribute")
    target.add_argument("--rollback", action="store_true", help="go back to the previous version")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure_logging("WARNING", settings.log_format)
    try:
        wiring = wire(settings, role="rollout")
        if args.rollback:
            rollback(wiring)
        else:
            rollout(wiring, args.model)
    except RolloutFailed as exc:
        print(f"rollout failed, nothing flipped: {exc}", file=sys.stderr)
        return 1
    except redis.RedisError as exc:
        where = redact(settings.redis_url)
        print(f"rollout failed: Redis at {where}: {redact(str(exc))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
