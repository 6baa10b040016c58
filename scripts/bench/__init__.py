"""`make bench`: our API side by side with the alternatives, on loopback, in one run.

run.py is the driver; seed_app.py, flask_caching_app.py and floors.py are the baselines,
each sharing our model, its latency and our Redis server (see baseline.py).
"""
