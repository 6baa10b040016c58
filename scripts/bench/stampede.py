"""A cold-key stampede: many clients asking for one expired prediction at once."""

from __future__ import annotations

import collections
import dataclasses
import http.client
import threading
import time


@dataclasses.dataclass(frozen=True)
class StampedeResult:
    clients: int
    statuses: dict[int, int]  # status (0: no answer) -> how many
    seconds: float  # until the last answer


def stampede(port: int, path: str, clients: int, timeout: float = 30) -> StampedeResult:
    """``clients`` requests for ``path``, each on its own open connection, sent together."""
    # Connected before the barrier: what is measured is concurrent requests, not connects.
    barrier = threading.Barrier(clients + 1, timeout=timeout)
    statuses: collections.Counter[int] = collections.Counter()
    lock = threading.Lock()

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        status = 0
        try:
            try:
                connection.connect()
            except OSError:
                barrier.abort()  # the others must not wait for a client that cannot come
                raise
            barrier.wait()
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException, threading.BrokenBarrierError):
            pass
        finally:
            connection.close()
            with lock:
                statuses[status] += 1

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    try:
        barrier.wait()
        started = time.perf_counter()
    except threading.BrokenBarrierError:
        pass  # counted as status 0 by the clients
    for thread in threads:
        thread.join(timeout + 5)
    return StampedeResult(clients, dict(statuses), time.perf_counter() - started)
