"""How the API process runs blocking work: the model, off the event loop.

Under gunicorn's gevent worker (gunicorn.conf.py) every connection is a greenlet on
one event loop, so a slow or silent client costs a little memory, never a thread. The
model is the one thing that must not run on that loop: a CPU-bound model would stall
every hit in the process while it runs. So it runs on a pool of real OS threads, one
per allowed concurrent computation, and the request's greenlet waits for it.
Elsewhere (the Flask test client, plain threads) it runs in the caller's thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from predictions.model import Offload, run_here


def under_gevent() -> bool:
    """True if this process was monkey-patched by gevent (gunicorn's gevent worker)."""
    try:
        from gevent import monkey
    except ImportError:  # gevent is a dependency, but the core runs without it
        return False
    return bool(monkey.is_module_patched("socket"))


def model_offload(threads: int) -> Offload[Any]:
    """Run the model on ``threads`` real threads under gevent, else in place."""
    if not under_gevent():
        return run_here
    from gevent.threadpool import ThreadPool

    pool = ThreadPool(threads)

    def offload(call: Callable[[], Any]) -> Any:
        return pool.apply(call)

    return offload
