"""The worker runs JSON messages only: anything else is refused, never executed."""

from __future__ import annotations

import pytest
from kombu.connection import Connection

from beat_schedule import REFRESH_BATCH_TASK
from predictions.infra.keys import prediction_key
from predictions.settings import Settings
from tests.harness.processes import ProcessFactory, RedisServer, wait_for
from tests.harness.system import TEST_VERSION
from worker.celery_app import create_celery
from worker.tasks import DEPRECATED_REFRESH_BATCH_TASK

pytestmark = pytest.mark.integration


def test_a_pickled_task_is_refused_and_a_json_one_runs(
    start: ProcessFactory, redis_server: RedisServer
) -> None:
    worker = start("worker")
    settings = Settings(redis_url=redis_server.url)
    producer_app = create_celery(settings)
    with Connection(settings.broker_url) as connection:  # type: ignore[no-untyped-call]
        # The same task, in pickle: what an attacker able to write to the broker sends.
        producer_app.send_task(
            REFRESH_BATCH_TASK, args=[["ETH-EUR"]], serializer="pickle",
            connection=connection,
        )  # fmt: skip
        wait_for(lambda: "Refusing to deserialize" in worker.output(), 30, what="refusal")
        assert not redis_server.client().exists(prediction_key("ETH-EUR", TEST_VERSION))
        assert worker.count("computed prediction pair=ETH-EUR ") == 0

        # The control: the same message in JSON is run.
        producer_app.send_task(REFRESH_BATCH_TASK, args=[["ETH-EUR"]], connection=connection)
        wait_for(lambda: redis_server.client().exists(prediction_key("ETH-EUR", TEST_VERSION)), 30)

        # The batch task's old name, as a worker of the previous release sends it.
        producer_app.send_task(
            DEPRECATED_REFRESH_BATCH_TASK, args=[["BTC-EUR"]], connection=connection
        )
        wait_for(lambda: redis_server.client().exists(prediction_key("BTC-EUR", TEST_VERSION)), 30)
    assert worker.running()
