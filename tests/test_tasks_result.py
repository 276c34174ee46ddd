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
