"""celery -A worker worker / celery -A worker beat"""

from worker.celery_app import create_celery

app = create_celery()
