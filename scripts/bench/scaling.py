"""Cost as pairs grow: our stack with N pairs and a model that takes no time.

For each N the worker and the API are started with PAIRS of N pairs and no beat; the
driver sends predictions.refresh_all itself and times it from the send until every
pair is in Redis. That is the worker's wall time for one full refresh, fan-out,
computation and writes included.

Then hits: every API worker process is made to hold a copy of every pair (as clients
asking at random would, in time), and the N-pair API is measured side by side with an
API configured with the 4 default pairs, on the same cache: one request at a time
(latency), and under load with wrk picking pairs at random (throughput).
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
from celery import Celery

from beat_schedule import REFRESH_ALL_TASK
from predictions.infra.keys import prediction_key
from predictions.settings import DEFAULT_PAIRS, Settings
from scripts.bench import probes, wrk
from scripts.bench.results import BASELINE_PAIRS, OURS, ScalePoint
from scripts.bench.targets import OURS_VERSION, StartFailed, Target
from tests.harness.processes import RedisServer

REFRESH_TIMEOUT_SECONDS = 120
POLL_SECONDS = 0.005
# An expiry longer than any point takes to measure (the driver sends the refreshes, not
# beat): every request measured is a hit, none waits for an early or a late refresh.
SETTINGS = {"SIMULATED_MODEL_LATENCY_SECONDS": "0", "PREDICTION_TTL_SECONDS": "3600"}
# New connections tried per API worker process until each holds one (the kernel picks),
# and the pairs asked per request (GET /predict?pairs= takes up to api.openapi.MAX_BATCH).
FILL_ATTEMPTS_PER_WORKER = 20
FILL_BATCH = 100
# Requests written at once when every pair is then asked alone (pipelined).
FILL_DEPTH = 100
# A process starts following the write feed on its first request; this covers the
# subscription (one round trip), so that the copies read after it are kept current.
FOLLOW_START_SECONDS = 0.5


def scale_pairs(count: int) -> list[str]:
    """``count`` distinct valid pairs: the default ones first, then P0-USD, P1-USD..."""
    pairs = list(DEFAULT_PAIRS[:count])
    pairs += [f"P{i}-USD" for i in range(count - len(pairs))]
    return pairs


def write_pairs_file(pairs: list[str], path: Path) -> Path:
    path.write_text("\n".join(pairs) + "\n")
    return path


class Refresher:
    """Sends refresh_all to our worker, as beat would, and times it."""

    def __init__(self, target: Target) -> None:
        self.target = target
        broker = Settings(redis_url=target.env["REDIS_URL"]).broker_url  # as the worker does
        self.celery = Celery("bench", broker=broker, set_as_current=False)
        self.celery.conf.broker_connection_retry_on_startup = True

    def timed_refresh(self) -> float:
        """Seconds from sending refresh_all until every configured pair is cached."""
        cache = self.target.redis
        # The cache's database only (the broker's queues are in another). This also
        # clears the interval's refresh slot, so that this refresh_all is not skipped as
        # a second one in the same interval.
        cache.flushdb()
        expected = len(self.target.pairs)
        missing = [prediction_key(pair, OURS_VERSION) for pair in self.target.pairs]
        started = time.perf_counter()
        self.celery.send_task(REFRESH_ALL_TASK, expires=REFRESH_TIMEOUT_SECONDS)
        while missing:
            if time.perf_counter() - started > REFRESH_TIMEOUT_SECONDS:
                raise TimeoutError(
                    f"refresh of {expected} pairs: {len(missing)} not written "
                    f"within {REFRESH_TIMEOUT_SECONDS} s"
                )
            time.sleep(POLL_SECONDS)
            # DBSIZE is O(1): polled until it could be done, so that polling does not
            # steal the CPU the worker is measured on. Refresh slots and compute locks
            # live in this database too, so then the keys still missing are checked.
            if cache.dbsize() >= expected:
                missing = _still_missing(cache, missing)
        return time.perf_counter() - started

    def close(self) -> None:
        self.celery.close()


def _still_missing(cache: redis.Redis, keys: list[str]) -> list[str]:
    pipe = cache.pipeline(transaction=False)
    for key in keys:
        pipe.exists(key)
    return [key for key, found in zip(keys, pipe.execute(), strict=True) if not found]


def fill_near_copies(target: Target, pairs: Sequence[str]) -> int:
    """Have every API worker process read, then serve, every pair; return how many did.

    A process keeps a near copy current from the write feed only once it holds one (it
    read the pair from Redis itself), so with N pairs a worker answers every pair from
    memory only after it was asked for each, as it would in time under random clients;
    and it keeps a little per pair it has served (prepared headers, a metric's label).
    Here at once, on one keep-alive connection per worker (its worker found in the
    kernel's socket table): every pair through the batch endpoint, whose one Redis read
    per batch keeps a copy of each pair exactly as a single read does, then every pair
    asked alone, so that the RSS read later is a worker's whole cost of N pairs.
    """
    workers = {process.pid for process in probes.worker_processes(target.server.pid)}
    held: dict[int, http.client.HTTPConnection] = {}
    try:
        for _ in range(FILL_ATTEMPTS_PER_WORKER * len(workers)):
            if len(held) == len(workers):
                break
            connection = http.client.HTTPConnection("127.0.0.1", target.port, timeout=15)
            pid = None
            try:
                _ask(target, connection, f"/predict/{pairs[0]}")  # answered: accepted
                if connection.sock is not None:
                    client_port = connection.sock.getsockname()[1]
                    pid = probes.worker_holding(target.server.pid, target.port, client_port)
            finally:
                if pid is None or pid in held:
                    connection.close()
            if pid is not None and pid not in held:
                held[pid] = connection
        time.sleep(FOLLOW_START_SECONDS)
        batches = [
            "/predict?pairs=" + ",".join(pairs[start : start + FILL_BATCH])
            for start in range(0, len(pairs), FILL_BATCH)
        ]
        singles = [f"/predict/{pair}" for pair in pairs]

        def fill(connection: http.client.HTTPConnection) -> None:
            _walk(target, connection, batches)
            if connection.sock is None:  # http.client closed it: the server said so
                raise StartFailed(f"{target.title}: connection closed while filling")
            _walk_pipelined(target, connection.sock, singles)

        with ThreadPoolExecutor(max_workers=max(1, len(held))) as pool:
            list(pool.map(fill, held.values()))
    finally:
        for connection in held.values():
            connection.close()
    return len(held)


def _walk(target: Target, connection: http.client.HTTPConnection, paths: Sequence[str]) -> None:
    for path in paths:
        _ask(target, connection, path)


def _walk_pipelined(target: Target, sock: socket.socket, paths: Sequence[str]) -> None:
    """GET every path on one open connection, FILL_DEPTH requests written at a time.

    HTTP/1.1 pipelining, which gunicorn serves in order: one request at a time would
    cost a round trip through this driver's Python for each of N pairs per worker.
    Hand-rolled because http.client cannot pipeline; every answer must be a 200.
    """
    request = f"GET {{}} HTTP/1.1\r\nHost: 127.0.0.1:{target.port}\r\n\r\n"
    buffer = b""
    for start in range(0, len(paths), FILL_DEPTH):
        chunk = paths[start : start + FILL_DEPTH]
        sock.sendall("".join(request.format(path) for path in chunk).encode())
        answered = 0
        while answered < len(chunk):
            end = buffer.find(b"\r\n\r\n")
            length = _content_length(buffer[:end]) if end >= 0 else None
            if length is None or len(buffer) < end + 4 + length:
                received = sock.recv(1 << 16)
                if not received:
                    raise StartFailed(f"{target.title}: connection closed while filling")
                buffer += received
                continue
            status = buffer.split(b" ", 2)[1]
            if status != b"200":
                raise StartFailed(f"{target.title}: a pair answered {status!r} while filling")
            buffer = buffer[end + 4 + length :]
            answered += 1


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return None


def _ask(target: Target, connection: http.client.HTTPConnection, path: str) -> None:
    connection.request("GET", path)
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise StartFailed(f"{target.title}: {path[:60]} answered {response.status} while filling")
    if path.startswith("/predict?"):
        # A batch answers 200 whatever each pair's status: every one must be fresh.
        statuses = {item.get("status") for item in json.loads(body)["items"]}
        if statuses != {"fresh"}:
            raise StartFailed(f"{target.title}: a batch while filling found {statuses}")


def measure_point(
    count: int,
    redis_server: RedisServer,
    work_dir: Path,
    run_id: str,
    *,
    repeats: int,
    rounds: int,
    hit_seconds: float,
    load_seconds: float,
    threads: int,
    connections: int,
) -> ScalePoint:
    """Start our stack with ``count`` pairs, measure it, stop it.

    Hits are measured in rounds alternating with a second API configured with the 4
    default pairs, reading the same cache (the worker refreshes those too): the
    per-round ratio cancels the noise that separate runs minutes apart would not.
    Latency (one request at a time): the N-pair API asked across all its pairs in turn,
    and for the 4 default pairs only (what merely configuring N pairs costs).
    Throughput (wrk with many connections): the N-pair API asked for its pairs at
    random, the 4-pair API for its 4.
    """
    pairs = scale_pairs(count)
    pairs_file = write_pairs_file(pairs, work_dir / f"pairs-{count}.txt")
    redis_server.client().flushall()
    target = Target(OURS, redis_server, work_dir, pairs, run_id, SETTINGS)
    started = [target]
    reference: Target | None = None
    if count > BASELINE_PAIRS:
        reference_pairs = scale_pairs(BASELINE_PAIRS)
        reference_file = write_pairs_file(reference_pairs, work_dir / "pairs-reference.txt")
        reference = Target(OURS, redis_server, work_dir, reference_pairs, run_id, SETTINGS)
        started.append(reference)
    refresher = Refresher(target)
    try:
        target.start(f"scale-{count}", beat=False)
        if reference is not None:
            reference.start(f"scale-{count}-reference", beat=False, worker=False)
        # The first refresh also loads the model in every pool process: not measured.
        refresher.timed_refresh()
        refresh_seconds = [refresher.timed_refresh() for _ in range(repeats)]
        used_memory = probes.redis_memory(redis_server.client())[0]
        per_pair = probes.mean_key_bytes(
            target.redis, [prediction_key(p, OURS_VERSION) for p in pairs]
        )
        filling = time.perf_counter()
        warmed = fill_near_copies(target, pairs)
        fill_seconds = time.perf_counter() - filling
        if reference is not None:
            fill_near_copies(reference, reference_pairs)
        hits: list[wrk.WrkResult] = []
        reference_hits: list[wrk.WrkResult] = []
        hits_on_reference_pairs: list[wrk.WrkResult] = []
        for number in range(rounds):
            runs = [(target, pairs_file, hits)]
            if reference is not None:
                runs.append((reference, reference_file, reference_hits))
                runs.append((target, reference_file, hits_on_reference_pairs))
            for api, file, found in runs[number % len(runs) :] + runs[: number % len(runs)]:
                found.append(wrk.run(api.url, file, threads=1, connections=1, seconds=hit_seconds))
        random_loads: list[wrk.WrkResult] = []
        reference_loads: list[wrk.WrkResult] = []
        if reference is not None:
            for number in range(rounds):
                loads = [
                    (target, pairs_file, random_loads),
                    (reference, reference_file, reference_loads),
                ]
                for api, file, found in loads[number % 2 :] + loads[: number % 2]:
                    found.append(
                        wrk.run(
                            api.url,
                            file,
                            threads=threads,
                            connections=connections,
                            seconds=load_seconds,
                            random_pairs=True,
                        )
                    )
        # Load across every pair fills whatever the API keeps per pair, before its RSS.
        load = wrk.run(
            target.url, pairs_file, threads=threads, connections=connections, seconds=load_seconds
        )
        if target.worker is None:
            raise RuntimeError("our stack started without its worker")
        return ScalePoint(
            pairs=count,
            refresh_seconds=refresh_seconds,
            redis_used_memory=used_memory,
            redis_bytes_per_pair=per_pair,
            hits=hits,
            reference_hits=reference_hits,
            hits_on_reference_pairs=hits_on_reference_pairs,
            load=load,
            api_rss_mib=probes.rss_mb(target.server.pid),
            pool_rss_mib=probes.rss_mb(target.worker.pid),
            random_loads=random_loads,
            reference_loads=reference_loads,
            warmed_workers=warmed,
            fill_seconds=fill_seconds,
        )
    finally:
        refresher.close()
        for api in reversed(started):
            api.stop()
