"""The settings the integration suite's system runs with (tests/integration/conftest.py).

Short enough that three TTLs fit in a test, long enough for a loaded 2-core machine.
"""

from __future__ import annotations

from predictions.model import LogLinearTrendModel

TEST_PAIRS = "ETH-EUR,BTC-EUR,ETH-USD,BTC-USD"
PAIRS = TEST_PAIRS.split(",")
TEST_TTL = 4
TEST_REFRESH = 1
TEST_MODEL_LATENCY = 0.3
# The processes run the default model: its predictions are stored under its version.
TEST_VERSION = LogLinearTrendModel.version
# How long past its freshness a prediction stays in Redis, served as STALE.
TEST_GRACE = 60
