"""The Celery app and its configuration, built from Settings."""

from __future__ import annotations

import os
import sys
from typing import Any

import celery.apps.worker
from celery import Celery
from celery.signals import celeryd_init, setup_logging, worker_process_init

from beat_schedule import build_schedule
from predictions.infra import configure_logging, configure_root_logging, json_line
from predictions.model import import_model
from predictions.settings import Settings
from worker.schedulers import REGISTRY_LOOK_SECONDS


def create_celery(settings: Settings | None = None) -> Celery:
    """A Celery app for ``settings``; tasks find the settings as ``app.settings``."""
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    # Models are importable from the working directory, as under gunicorn: Celery has
    # it on sys.path only while it loads the app (then removes it), and a rollout may
    # name a model module beside the project long after that, in any pool process.
    project_dir = os.getcwd()

    def models_importable(**_: object) -> None:
        if project_dir not in sys.path:
            sys.path.append(project_dir)

    worker_process_init.connect(models_importable, weak=False)
    # Import (not build) the model now: a bad MODEL stops the worker at start-up, and
    # a model that takes long to load (a large file) does so in each pool process on
    # its first task, never holding up the worker's start.
    import_model(settings.model)
    app = Celery("prediction_cache", include=["worker.tasks", "worker.metrics_server"])
    _use_our_log_format(app, settings)
    # A refresh of one batch may take this long before it is interrupted.
    soft_limit = 3 * settings.refresh_interval_seconds + settings.compute_timeout_seconds
    hard_limit = soft_limit + 10
    broker_url = settings.broker_url  # checked here: a bad one stops the worker and beat
    app.conf.update(
        broker_url=broker_url,
        broker_transport_options=broker_transport_options(settings, broker_url, hard_limit),
        broker_connection_retry_on_startup=True,
        # Keep reconnecting for as long as Redis is away.
        broker_connection_max_retries=None,
        # JSON only: a message in any other format is rejected, never run.
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        result_backend=None,
        # Acknowledge after the refresh, and take one task at a time: a worker that
        # dies mid-refresh leaves the message for another worker.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # False on purpose: with True, a broker connection lost while a late-acked task
        # runs crashes the worker's consumer for good (celery/celery#9250, seen here on
        # Redis restarts). A refresh is idempotent, so letting it finish is harmless.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_soft_time_limit=soft_limit,
        task_time_limit=hard_limit,
        worker_concurrency=settings.worker_concurrency,
        timezone="UTC",
        enable_utc=True,
        beat_schedule=build_schedule(settings.refresh_interval_seconds),
        # In memory, due at start-up: see worker/schedulers.py.
        beat_scheduler="worker.schedulers:WarmStartScheduler",
        # Beat looks at the pair registry on every tick: a pair added, or one with a
        # refresh interval of its own, is acted on within about a second.
        beat_max_loop_interval=REGISTRY_LOOK_SECONDS,
    )
    app.settings = settings
    return app


def broker_transport_options(
    settings: Settings, broker_url: str, hard_limit: float
) -> dict[str, object]:
    """kombu's options for the broker's transport, with every timeout explicit."""
    scheme = broker_url.partition("://")[0]
    if scheme in ("amqp", "amqps", "pyamqp"):
        # RabbitMQ redelivers an unacknowledged task only when the worker's connection
        # drops, never on a timer, so there is no visibility timeout to size.
        return {"connect_timeout": 5, "read_timeout": 10, "write_timeout": 10}
    options: dict[str, object] = {
        # Redelivery of an unacknowledged task must wait until it could not possibly
        # still be running, or a slow task would run twice.
        "visibility_timeout": int(hard_limit) + 60,
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 15,
    }
    if scheme == "sentinel":
        # The sentinels are asked for the master's address, with the same timeouts.
        options["master_name"] = settings.redis_sentinel_master
        options["sentinel_kwargs"] = {"socket_timeout": 5, "socket_connect_timeout": 5}
    if settings.broker_key_prefix:
        # Sharing the cache's database: the queues' keys are kept apart by a prefix.
        options["global_keyprefix"] = settings.broker_key_prefix
    return options


def _use_our_log_format(app: Celery, settings: Settings) -> None:
    """Celery's own lines (worker and beat) in LOG_FORMAT, like ours: JSON by default."""

    def before_worker_checks(**_: object) -> None:
        # Before the worker's start-up checks, whose warnings would otherwise be text.
        configure_root_logging(settings.log_level, settings.log_format)

    def instead_of_celery_logging(loglevel: object = None, **_: object) -> None:
        # Connected, this signal stops Celery from configuring logging itself.
        configure_root_logging(loglevel or settings.log_level, settings.log_format)  # type: ignore[arg-type]
        app.log.redirect_stdouts("WARNING")  # a model's print() becomes a log line

    celeryd_init.connect(before_worker_checks, weak=False)
    setup_logging.connect(instead_of_celery_logging, weak=False)
    if settings.log_format == "json":
        # The worker prints its shutdown notices from its signal handler with a raw
        # write (no logging, which could block there); keep the raw write, in JSON.
        # (Celery's own raw write: the original os.write, as under eventlet/gevent.)
        write = getattr(celery.apps.worker, "_original_os_write", os.write)

        def say_json(msg: str, f: Any = sys.__stderr__) -> None:
            if f is not None and hasattr(f, "fileno"):
                write(f.fileno(), (json_line("WARNING", "celery", msg.strip()) + "\n").encode())

        celery.apps.worker.safe_say = say_json
