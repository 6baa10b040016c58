"""The worker's Prometheus endpoint: refresh counts, failures and durations.

Served by the worker's main process from the values its pool processes write
(prometheus-client's multiprocess mode), on WORKER_METRICS_BIND.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_ready
from prometheus_client import start_http_server

from predictions.infra import metrics

log = logging.getLogger(__name__)


@worker_ready.connect  # type: ignore[untyped-decorator]
def serve_metrics(sender: Any = None, **_: Any) -> None:
    bind = sender.app.settings.worker_metrics_bind
    if bind == "off":
        return
    host, _sep, port = bind.rpartition(":")
    try:
        start_http_server(int(port), host, registry=metrics.registry())
    except OSError as exc:
        # A second worker on the same host: it refreshes all the same.
        log.warning("worker metrics not served on %s: %s", bind, exc)
        return
    log.info("worker metrics on http://%s/metrics", bind)
