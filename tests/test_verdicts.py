"""Tests for lens_steer.report.verdicts: verdict rules, conservative mean differences and paired intervals by hand."""

from __future__ import annotations

import math

import pytest
from _results_fixtures import NB, preds

from lens_steer.pipeline.results_entries import Paired
from lens_steer.report.verdicts import (
    Interval,
    ReportError,
    context_reading,
    judge_difference,
    judge_gain,
    judge_retention,
    mean_difference,
    paired_proportion_interval,
)
from lens_steer.stats import metrics_to_dict
from lens_steer.tasks.metrics import paired_comparison

WIN, LOSS, CROSS = Interval(0.10, 0.05, 0.15), Interval(-0.10, -0.15, -0.05), Interval(0.02, -0.03, 0.07)


def test_judge_gain_cases() -> None:
    assert judge_gain(WIN, [WIN, Interval(0.04, 0.01, 0.07)]).verdict == "held"
    assert judge_gain(LOSS, [WIN]).verdict == "not held"
    assert judge_gain(CROSS, [WIN]).verdict == "inconclusive"
    assert judge_gain(WIN, [WIN, CROSS]).verdict == "inconclusive"  # not beyond one random control
    assert judge_gain(WIN, []).verdict == "inconclusive"
    assert judge_difference(Interval(0.0, 0.0, 0.0)).verdict == "inconclusive"


def test_judge_retention_margin() -> None:
    assert judge_retention(Interval(-0.01, -0.015, 0.0)).verdict == "held"
    assert judge_retention(Interval(-0.05, -0.07, -0.03)).verdict == "not held"
    assert judge_retention(Interval(-0.02, -0.05, 0.01)).verdict == "inconclusive"


def test_mean_difference_by_hand() -> None:
    a1, b1 = Interval(0.10, 0.06, 0.14), Interval(0.02, 0.00, 0.04)
    a2, b2 = Interval(0.00, -0.02, 0.02), Interval(0.04, 0.02, 0.06)
    got = mean_difference([(a1, b1), (a2, b2)])
    z = 1.959963984540054
    sd1, sd2 = (0.08 + 0.04) / (2 * z), (0.04 + 0.04) / (2 * z)
    half = z * math.sqrt(sd1**2 + sd2**2) / 2
    assert got.value == pytest.approx((0.08 - 0.04) / 2)
    assert (got.lo, got.hi) == pytest.approx((0.02 - half, 0.02 + half))


def test_paired_proportion_interval_by_hand() -> None:
    got = paired_proportion_interval(12, 4, 100)
    g, l, n = 12.5, 4.5, 102  # noqa: E741
    se = math.sqrt(g + l - (g - l) ** 2 / n) / n
    assert got.value == pytest.approx(0.08)
    assert (got.lo, got.hi) == pytest.approx(
        ((g - l) / n - 1.959963984540054 * se, (g - l) / n + 1.959963984540054 * se)
    )
    none_changed = paired_proportion_interval(0, 0, 8)
    assert none_changed.lo < 0 < none_changed.hi  # no collapse to a point on a tiny sample
    with pytest.raises(ReportError):
        paired_proportion_interval(5, 6, 10)


def test_context_reading_tells_unknown_shift_from_debiasing() -> None:
    base = preds("age", 10, 40)
    shift = Paired.from_json(
        metrics_to_dict(paired_comparison(base, preds("age", 40, 10, unknown_disambig=50), n_boot=NB)), "shift"
    )
    debias = Paired.from_json(metrics_to_dict(paired_comparison(base, preds("age", 40, 40), n_boot=NB)), "debias")
    assert context_reading(shift).startswith('answers "unknown" more')
    assert context_reading(debias).startswith("better on ambiguous")
