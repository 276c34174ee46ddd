"""Tests for lens_steer.tasks.result: parse-rule counts of a run's records."""

from __future__ import annotations

from lens_steer.forward.generation import PARSE_RULES
from lens_steer.tasks.result import BenchResult


def test_parse_counts_of_records():
    records = [
        {"parse_rule": "letter"},
        {"parse_rule": "unparsed; kept candidate 2 of 5"},
        {"parse_rule": "unparsed"},
        {"parse_rule": None},
    ]
    assert BenchResult("bbq", records, {}).parse_counts == {
        r: {"letter": 1, "unparsed": 2}.get(r, 0) for r in PARSE_RULES
    }
    assert BenchResult("bbq", [{"parse_rule": None}], {}).parse_counts is None


def _metric(value: float, low: float, high: float, n: int) -> dict[str, float | int]:
    return {"value": value, "ci_low": low, "ci_high": high, "n": n}


def test_repr_shows_bench_items_and_headline_metrics_with_intervals():
    names = ("acc", "acc_ambig", "acc_disambig", "bias_ambig", "bias_disambig")
    overall = {name: _metric(0.1 * i, 0.1 * i - 0.05, 0.1 * i + 0.05, 400) for i, name in enumerate(names, 1)}
    overall["unknown_rate_ambig"] = _metric(0.9, 0.8, 1.0, 200)  # not a headline
    records = [{"pred": 0, "big": "x" * 1000} for _ in range(400)]
    metrics = {"overall": overall, "by_category": {f"c{i}": overall for i in range(50)}}
    result = BenchResult("bbq", records, metrics)
    text = repr(result)
    assert len(text) <= 300 and str(result) == text and "x" * 10 not in text
    assert text.startswith("BenchResult(bbq, 400 items: ") and "unknown_rate" not in text
    for i, name in enumerate(names, 1):
        assert f"{name} {0.1 * i:.3f} [{0.1 * i - 0.05:.3f}, {0.1 * i + 0.05:.3f}]" in text
    assert list(result.headline) == list(names)
    mmlu = BenchResult("mmlu", [{}] * 8, {"micro": _metric(0.5, 0.25, 0.75, 8), "macro": _metric(0.4, 0.2, 0.6, 3)})
    assert repr(mmlu) == "BenchResult(mmlu, 8 items: acc 0.500 [0.250, 0.750], macro_acc 0.400 [0.200, 0.600])"
    crows = BenchResult("crows", [{}] * 2, {"overall": _metric(0.5, 0.0, 1.0, 2), "by_bias_type": {}})
    assert repr(crows) == "BenchResult(crows, 2 items: stereotype_preferred 0.500 [0.000, 1.000])"
    assert repr(BenchResult("bbq", [], {})) == "BenchResult(bbq, 0 items)"
