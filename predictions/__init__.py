"""The framework-free core of prediction-cache, shared by the API and the worker.

Three parts, each importing only the ones below it (import-linter holds them to it,
see pyproject.toml):

- ``predictions.cache``: serving a pair: the store in Redis and its write feed, the
  process's near copies, the read-through cache (one computation per pair, however
  many ask), locks, single flight, revalidation and the circuit breaker;
- ``predictions.model``: making a prediction: the model contract and default model,
  the predictor, model versions, market data and the prediction record;
- ``predictions.infra``: what every part stands on: Redis keys, the one clock, logs,
  metrics, redaction of secrets.

``predictions.settings`` declares every setting; ``predictions.wiring`` builds a
process's objects from them; ``predictions.rollout`` moves the served model version.
Neither Flask nor Celery is imported here. docs/architecture.md is the code map.
"""
