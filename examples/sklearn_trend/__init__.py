"""A scikit-learn model trained offline, saved with joblib, loaded once per process.

train.py fits it on the synthetic feed and writes model.joblib; model.py serves it
(``MODEL=examples.sklearn_trend.model:SklearnTrendModel``); features.py is the one
definition of its inputs, shared by both so that training and serving cannot drift.
"""
