"""gunicorn's configuration, read from the working directory by `gunicorn api.wsgi:app`.

Values come from Settings (API_BIND, API_WORKERS, API_THREADS); `--bind` and other
command-line flags still override them.
"""

from predictions.settings import Settings

_settings = Settings.from_env()

bind = [_settings.api_bind]
# Threads, not async workers: a miss blocks a thread on the model for about a second,
# while hits on other threads keep being served.
worker_class = "gthread"
workers = _settings.api_workers
threads = _settings.api_threads
# Longer than a miss can take (compute timeout), so a computing worker is never killed.
timeout = int(_settings.compute_timeout_seconds) + 20
graceful_timeout = 10
keepalive = 5
errorlog = "-"
loglevel = _settings.log_level.lower()
# gunicorn 24+ opens a control socket in $HOME by default; two servers on one machine
# (tests, a second checkout) would fight over it, and nothing here uses it.
control_socket_disable = True
