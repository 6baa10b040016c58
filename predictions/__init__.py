"""The framework-free core of prediction-cache: settings, keys, store and model.

Neither Flask nor Celery is imported here, so the API and the worker share this
package without importing each other.
"""
