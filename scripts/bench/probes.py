"""Looking inside running servers: connections per worker process, and memory."""

from __future__ import annotations

import psutil
import redis

MB = 1024 * 1024


def worker_processes(main_pid: int) -> list[psutil.Process]:
    """The processes that do the work: gunicorn's workers or Celery's pool.

    A server without children (uvicorn with one process) does the work itself.
    """
    main = psutil.Process(main_pid)
    return main.children() or [main]


def connection_split(main_pid: int, port: int) -> list[int]:
    """Established client connections held by each worker process, busiest first.

    With gthread workers and keep-alive clients, one worker may accept every connection
    (the first to wake takes them all) and the other idles: this shows whether it did.
    """
    counts = []
    for process in worker_processes(main_pid):
        try:
            connections = process.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        counts.append(
            sum(
                1
                for c in connections
                if c.status == psutil.CONN_ESTABLISHED and c.laddr and c.laddr.port == port
            )
        )
    return sorted(counts, reverse=True)


def worker_holding(main_pid: int, port: int, client_port: int) -> int | None:
    """The PID of the worker process that holds the client connection from
    ``client_port`` to ``port`` (None: no worker holds it, or it is already gone)."""
    for process in worker_processes(main_pid):
        try:
            connections = process.net_connections(kind="tcp")
        except psutil.NoSuchProcess:
            continue
        for c in connections:
            if c.laddr and c.laddr.port == port and c.raddr and c.raddr.port == client_port:
                return int(process.pid)
    return None


def rss_mb(main_pid: int) -> list[float]:
    """Resident memory of each worker process, in MiB."""
    sizes = []
    for process in worker_processes(main_pid):
        try:
            sizes.append(process.memory_info().rss / MB)
        except psutil.NoSuchProcess:
            continue
    return sizes


def redis_memory(client: redis.Redis) -> tuple[int, int]:
    """INFO memory's used_memory and used_memory_dataset, in bytes (every database)."""
    info = client.info("memory")
    return int(info["used_memory"]), int(info["used_memory_dataset"])


def mean_key_bytes(client: redis.Redis, keys: list[str], sample: int = 200) -> float:
    """MEMORY USAGE of up to ``sample`` keys spread over ``keys``, averaged.

    Exact per key, where differences of INFO figures drown a few keys in the noise of
    client buffers and the broker's queues.
    """
    step = max(1, len(keys) // sample)
    pipe = client.pipeline(transaction=False)
    for key in keys[::step]:
        pipe.memory_usage(key, samples=0)
    sizes = [size for size in pipe.execute() if size is not None]
    return sum(sizes) / len(sizes) if sizes else 0.0
