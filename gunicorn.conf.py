"""gunicorn's configuration, read from the working directory by `gunicorn api.wsgi:app`.

Values come from Settings (API_BIND, API_WORKERS, API_THREADS); `--bind` and other
command-line flags still override them.
"""

import os

from predictions.multiprocess import use_multiprocess_dir

# Every worker process writes its metrics here, and /metrics adds them up. Set before
# anything imports prometheus_client (the workers import the app after the fork).
use_multiprocess_dir("api")

from predictions.logs import gunicorn_logconfig  # noqa: E402
from predictions.settings import Settings  # noqa: E402

_settings = Settings.from_env()

bind = [_settings.api_bind]
# Threads, not async workers: a miss blocks a thread on the model for about a second,
# while hits on other threads keep being served.
worker_class = "gthread"
workers = _settings.api_workers
threads = _settings.api_threads
# Longer than a miss can take (compute timeout), so a computing worker is never killed.
timeout = int(_settings.compute_timeout_seconds) + 20
# On SIGTERM, in-flight requests (a miss: up to the compute timeout) may finish.
graceful_timeout = int(_settings.compute_timeout_seconds) + 5
keepalive = 5
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
# gunicorn 24+ opens a control socket in $HOME by default; two servers on one machine
# (tests, a second checkout) would fight over it, and nothing here uses it.
control_socket_disable = True


def child_exit(server: object, worker: object) -> None:
    """A worker died or was recycled: drop its live gauges (its counters still count)."""
    from predictions.metrics import mark_process_dead

    mark_process_dead(worker.pid)  # type: ignore[attr-defined]
