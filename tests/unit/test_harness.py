"""The harness's own arithmetic: what the serving and fault tests' bars are computed with."""

from __future__ import annotations

import math

import pytest

from tests.harness.load import percentile


def test_percentile_is_nearest_rank_on_a_0_to_100_scale() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # unsorted on purpose
    assert percentile(values, 99) == 99.0  # the second slowest of 100, as time_requests
    assert percentile(values, 100) == 100.0
    assert percentile(values, 50) == 50.0
    assert percentile(values, 0) == 1.0
    assert percentile([0.2, 0.1, 0.3], 50) == 0.2  # a measured value, never interpolated


def test_percentile_of_nothing_is_nan_and_the_scale_is_checked() -> None:
    assert math.isnan(percentile([], 99))
    for p in (-1, 101):
        with pytest.raises(ValueError, match="0..100"):
            percentile([1.0], p)
