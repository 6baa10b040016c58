"""celery -A worker worker / celery -A worker beat"""

from predictions.infra import use_multiprocess_dir

use_multiprocess_dir("celery")  # before prometheus_client is imported: see that module

from worker.celery_app import create_celery  # noqa: E402

app = create_celery()
