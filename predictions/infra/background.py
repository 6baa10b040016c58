"""Background threads (greenlets under gevent), started once per process, on first need.

Started lazily, never at import: gunicorn forks its workers after loading the settings,
and a thread started before the fork does not exist in the child.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

log = logging.getLogger(__name__)


class Background:
    """A daemon thread running ``target``, started at most once."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        self.target = target
        self.name = name
        self.thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def ensure_started(self) -> None:
        if self.thread is not None:
            return
        with self._lock:
            if self.thread is None:
                self.thread = threading.Thread(target=self.target, name=self.name, daemon=True)
                self.thread.start()


def repeat(wait: Callable[[], object], work: Callable[[], object], what: str) -> None:
    """Run ``work`` after each ``wait()``, for ever. A Redis error is logged once per
    outage, not once a turn; any other error is logged and survived (a thread has no
    caller to raise to)."""
    failing = False
    while True:
        wait()
        try:
            work()
        except redis.RedisError as exc:
            if not failing:
                log.warning("cannot %s, will retry: %r", what, exc)
            failing = True
        except Exception:
            log.exception("%s failed", what)
        else:
            failing = False
