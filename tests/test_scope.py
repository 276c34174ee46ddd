"""Tests for lens_steer.report.scope: what a run can show, its numbers recomputed from the fixture's raw results."""

from __future__ import annotations

import copy
import statistics
from typing import Any

import pytest
from _results_fixtures import META, N, full_results, typed

from lens_steer.pipeline.results import Results
from lens_steer.report.scope import SCOPE_HEADING, SMOKE_NOTICE, scope_lines


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return full_results()


def _line(lines: list[str], start: str) -> str:
    return next(x for x in lines if x.lstrip("- *").startswith(start))


def test_items_and_interval_widths_from_the_raw_results(results: dict[str, Any]) -> None:
    lines = scope_lines(typed(results))
    assert lines[0] == SCOPE_HEADING
    rows = results["ensemble"]["in_distribution"]
    items = _line(lines, "Items:")
    assert items.startswith(f"- Items: {N} BBQ test items per axis on {len(rows)} axes (age: 60 ambiguous, 60 disambig")
    assert f"; {results['ensemble']['mmlu']['n']} MMLU items" in items and f"by {100 / N:.1f} points" in items
    base = statistics.median(
        50 * (r["baseline"]["acc"]["ci_high"] - r["baseline"]["acc"]["ci_low"]) for r in rows.values()
    )
    diffs = [e["vs_base"]["overall"]["acc"]["diff"] for r in rows.values() for e in r["steered"].values()]
    paired = statistics.median(50 * (d["ci_high"] - d["ci_low"]) for d in diffs)
    widths = _line(lines, "Intervals:")
    assert f"about ±{base:.1f} points" in widths and f"a paired gain to about ±{paired:.1f} points" in widths
    assert f"smaller than about {paired:.0f} points cannot be told from 0" in widths


def test_the_smoke_notice_only_on_a_smoke_budget(results: dict[str, Any]) -> None:
    assert SMOKE_NOTICE in scope_lines(typed(results))  # META's budget is smoke
    for budget in ("small", "paper"):
        assert SMOKE_NOTICE not in scope_lines(typed({**results, "meta": {**META, "budget": budget}}))


def test_budget_line_names_the_budget_s_definition(results: dict[str, Any]) -> None:
    detail = {"name": "small", "trials": 8, "test_limit": 64, "control_seeds": [1], "mmlu_items": 64, "n_boot": 1000}
    lines = scope_lines(typed({**results, "meta": {**META, "budget": "small", "budget_detail": detail}}))
    assert _line(lines, "Budget:") == (
        "- Budget: `small` (8 search trials per axis, at most 64 test items per axis, 1 random control(s) per vector, "
        "64 MMLU items, 1000 bootstrap resamples)."
    )


def test_a_model_at_chance_says_so_and_one_above_chance_does_not(results: dict[str, Any]) -> None:
    at_chance = _line(scope_lines(typed(results)), "Chance:")  # the fixture's baseline: 40 of 120 right everywhere
    assert "at or below chance (33.3%, three options) on every axis" in at_chance
    assert "cannot be debiased" in at_chance
    above = copy.deepcopy(results)
    for a, cap in above["capability"].items():
        if a != "ses":
            cap["acc"] = {"value": 0.6, "ci_low": 0.5, "ci_high": 0.7, "n": N}
    one = _line(scope_lines(typed(above)), "Chance:")
    assert f"on 1 of {len(above['capability'])} axes (ses)" in one
    for cap in above["capability"].values():
        cap["acc"] = {"value": 0.6, "ci_low": 0.5, "ci_high": 0.7, "n": N}
    assert _line(scope_lines(typed(above)), "Chance:") == (
        "- Chance: the unsteered model is above chance (33.3%, three options) on every axis."
    )


def test_nothing_run_says_what_is_unknown() -> None:
    lines = scope_lines(Results())
    assert lines[2:] == [
        "- Budget: unknown (the run's metadata is missing).",
        "- Items: no BBQ test split was evaluated.",
        "- Intervals: none were computed (no bootstrap resamples, or no evaluation ran), so no verdict can be *held*: "
        "every claim is at best *inconclusive*.",
        "- Chance: the unsteered model was not evaluated, so whether it is above chance is unknown.",
    ]
