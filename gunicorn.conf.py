"""gunicorn's configuration, read from the working directory by `gunicorn api.wsgi:app`.

Values come from Settings (API_BIND, API_WORKERS, API_WORKER_CONNECTIONS,
API_HEADER_TIMEOUT_SECONDS); `--bind` and other command-line flags still override them.
"""

import gc
import os
import resource
from collections.abc import Callable

from predictions.infra import use_multiprocess_dir

# Every worker process writes its metrics here, and /metrics adds them up. Set before
# anything imports prometheus_client (the workers import the app after the fork).
use_multiprocess_dir("api")

from gunicorn.glogging import Logger  # noqa: E402

from predictions.infra import gunicorn_logconfig  # noqa: E402
from predictions.settings import Settings  # noqa: E402

_settings = Settings.from_env()

bind = [_settings.api_bind]
# gevent: every connection is a greenlet, so a burst of misses waits without holding
# threads, and slow or idle clients cost memory, not capacity. The model runs on real
# threads beside the loop (api/serving.py). Each worker holds at most
# worker_connections at once; past that it stops accepting (the kernel's backlog holds
# new ones for the other workers).
worker_class = "gevent"
workers = _settings.api_workers
worker_connections = _settings.api_worker_connections
# gunicorn's gevent worker reads each request's headers under a timeout of `keepalive`
# seconds (and closes an idle keep-alive connection after it): a client that trickles
# its headers, or sends nothing, is cut after API_HEADER_TIMEOUT_SECONDS.
keepalive = _settings.api_header_timeout_seconds
backlog = 2048

# Each connection is a file descriptor: lift the soft limit (often 1024) to the hard one,
# so that worker_connections can be reached at all.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _soft != resource.RLIM_INFINITY and (_hard == resource.RLIM_INFINITY or _soft < _hard):
    resource.setrlimit(resource.RLIMIT_NOFILE, (_hard, _hard))
# Longer than a miss can take (compute timeout), so a computing worker is never killed.
timeout = int(_settings.compute_timeout_seconds) + 20
# On SIGTERM, in-flight requests (a miss: up to the compute timeout) may finish.
graceful_timeout = int(_settings.compute_timeout_seconds) + 5
# Recycle each worker now and then, at staggered times, so a slow leak in a model or
# library can never grow without bound, and never all workers at once.
max_requests = 100_000
max_requests_jitter = 10_000
# Bounds on what a client may send before Flask runs. A request line longer than this
# gets gunicorn's own plain-text 400, not our JSON; below it, Flask answers in JSON.
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 4096
# The heartbeat file on tmpfs: a worker blocked on disk I/O is not taken for dead.
# (gunicorn creates it with mkstemp and unlinks it at once: no predictable name.)
_SHM = "/dev/shm"  # noqa: S108
worker_tmp_dir = _SHM if os.path.isdir(_SHM) else None
errorlog = "-"
loglevel = _settings.log_level.lower()
# gunicorn's own lines in LOG_FORMAT (JSON by default), like the app's.
logconfig_dict = gunicorn_logconfig(_settings.log_level, _settings.log_format)


class ServerLog(Logger):
    """gunicorn's log, without its access log unless one is asked for (--access-logfile).

    The API writes one access-log line per request itself (api/access_log.py). gunicorn
    would write a second one for every request because logconfig_dict is set, and
    building it costs about a fifth of a hit's CPU.
    """

    @property
    def access_log_enabled(self) -> bool:
        return bool(self.cfg.accesslog)


logger_class = ServerLog
# gunicorn 24+ opens a control socket in $HOME by default; two servers on one machine
# (tests, a second checkout) would fight over it, and nothing here uses it.
control_socket_disable = True


# Set in each worker that runs gevent's loop (the shipped worker_class): how a
# connection yields between its requests (see post_request).
_yield: Callable[[float], None] | None = None


def post_worker_init(worker: object) -> None:
    """The app is loaded: what it holds lives as long as the process, so the garbage
    collector need not walk it again. Without this, each full collection walks every
    object of Flask, gevent and redis-py, a pause of milliseconds while hits wait."""
    global _yield
    gc.collect()
    gc.freeze()
    from gunicorn.workers.ggevent import GeventWorker

    if isinstance(worker, GeventWorker):
        import gevent

        _yield = gevent.sleep


def post_request(worker: object, req: object, environ: object, resp: object) -> None:
    """Let every other connection take its turn before this one's next request.

    A greenlet only yields when a socket would block. A keep-alive client that sends
    its next request as soon as it has an answer finds the request already there, so
    without this its greenlet keeps the loop while the other connections' requests
    wait: under load, a few connections got answers in a millisecond and the rest
    waited hundreds. A timer (not sleep(0)) resumes it only after the loop has polled
    for I/O, so every ready connection is served once in between.
    """
    if _yield is not None:
        _yield(0.000_001)


def child_exit(server: object, worker: object) -> None:
    """A worker died or was recycled: drop its live gauges (its counters still count)."""
    from predictions.infra import metrics

    metrics.mark_process_dead(worker.pid)  # type: ignore[attr-defined]
