"""Models written the way a user writes one, run by the service as they are.

The service imports its model by ``MODEL=package.module:attribute`` from its working
directory (the repository root, where gunicorn and Celery run), so these need no
install: ``MODEL=examples.template_model:TemplateModel`` or
``MODEL=examples.sklearn_trend.model:SklearnTrendModel``. The contract they follow is
stated in predictions/model/contract.py and, annotated, in template_model.py.
"""
