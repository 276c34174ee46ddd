"""Tests for lens_steer.stats: the bootstrap against the normal approximation and against itself, McNemar against
scipy, and Metric's JSON form."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import binomtest

from lens_steer.stats import Metric, MetricsError, bootstrap_ci, mcnemar_exact, metrics_to_dict


def test_bootstrap_ci_covers_point_and_shrinks_like_one_over_sqrt_n():
    widths = {}
    for n in (100, 1600):
        x = np.array([1.0] * (3 * n // 10) + [0.0] * (7 * n // 10))
        m = bootstrap_ci(x, n_boot=2000, seed=0)
        assert m.value == pytest.approx(0.3) and m.n == n
        assert m.ci_low < m.value < m.ci_high
        widths[n] = m.ci_high - m.ci_low
        normal = 2 * 1.959964 * math.sqrt(0.3 * 0.7 / n)  # normal-approximation width
        assert widths[n] == pytest.approx(normal, rel=0.15)
    assert widths[1600] < widths[100] / 3


def test_bootstrap_ci_modes_agree_and_are_seeded():
    x = np.random.default_rng(1).normal(size=50)
    a = bootstrap_ci(x, n_boot=200, seed=3)
    b = bootstrap_ci(x, n_boot=200, seed=3, vectorized=True)
    c = bootstrap_ci((x, x**2), lambda u, v: float(np.mean(u) + np.mean(v) * 0), n_boot=200, seed=3)
    assert a.ci_low == pytest.approx(b.ci_low, abs=1e-12) and a.ci_high == pytest.approx(b.ci_high, abs=1e-12)
    assert (c.ci_low, c.ci_high) == pytest.approx((a.ci_low, a.ci_high), abs=1e-12)
    assert bootstrap_ci(x, n_boot=200, seed=4).ci_low != a.ci_low
    with pytest.raises(MetricsError, match="n_boot"):
        bootstrap_ci(x, n_boot=-1)
    with pytest.raises(MetricsError, match="non-empty"):
        bootstrap_ci(np.array([]))


@pytest.mark.parametrize("gained, lost", [(0, 0), (1, 0), (0, 7), (5, 5), (10, 3), (3, 30), (120, 80), (1000, 1100)])
def test_mcnemar_exact_matches_scipy_binomtest(gained, lost):
    expected = 1.0 if gained + lost == 0 else binomtest(gained, gained + lost, 0.5).pvalue
    assert mcnemar_exact(gained, lost) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_metric_to_dict():
    d = Metric(0.5, 0.25, 0.75, 8).to_dict()
    assert d == {"value": 0.5, "ci_low": 0.25, "ci_high": 0.75, "n": 8}
    nested = metrics_to_dict({"a": [Metric(np.float64(1.0), 1.0, 1.0, 1)], "b": np.int64(3)})
    assert json.loads(json.dumps(nested)) == {"a": [{"value": 1.0, "ci_low": 1.0, "ci_high": 1.0, "n": 1}], "b": 3}
