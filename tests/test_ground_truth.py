"""Tests for lens_steer.pipeline.ground_truth and lens_steer.report.ground_truth: every branch of the rules on
hand-built paired results (typed as reproduce writes them), the registry, the target, the JSON round trip, and the
section's text printed from the rules' data."""

from __future__ import annotations

from typing import Any

import pytest

from lens_steer.pipeline.ground_truth import (
    CLEAN_RULES,
    METHODS,
    PLANTED_RULES,
    GroundTruth,
    Rule,
    cell_numbers,
    ground_truth,
    verdict,
)
from lens_steer.pipeline.results_entries import EnsembleResults, Steered
from lens_steer.report.ground_truth import markdown


def m(value: float, lo: float, hi: float, n: int = 50) -> dict[str, Any]:
    return {"value": value, "ci_low": lo, "ci_high": hi, "n": n}


def cond(acc: tuple, bias: tuple, level: tuple = (0.5, 0.0)) -> dict[str, Any]:
    """One condition of a paired comparison: diffs as given, steered values `level` plus the diffs."""

    def t(d: tuple, base: float) -> dict[str, Any]:
        return {"base": m(base, base, base), "steered": m(base + d[0], base, base), "diff": m(*d)}

    return {"n": 25, "acc": t(acc, level[0]), "bias": t(bias, level[1])}


def paired(acc_amb: tuple, acc_dis: tuple, bias_amb: tuple, amb_level: tuple = (0.5, 0.0)) -> dict[str, Any]:
    zero = (0.0, 0.0, 0.0)
    return {
        "n": 50,
        "bias_variant": "lm_eval",
        "overall": cond(zero, zero),
        "ambig": cond(acc_amb, bias_amb, amb_level),
        "disambig": cond(acc_dis, zero),
    }


def entry(vs_base: dict, control_margin: tuple | None = (0.2, 0.1, 0.3)) -> dict[str, Any]:
    zero = (0.0, -0.1, 0.1)
    controls = (
        []
        if control_margin is None
        else [
            {
                "seed": 1,
                "vs_base": paired(zero, zero, zero),
                "steered_vs_control": {**paired(control_margin, zero, zero)},
            }
        ]
    )
    return {"coeff": 2.0, "vs_base": vs_base, "controls": controls, "control_mean_acc": None, "beats_controls": None}


# the planted organism answers "unknown" on 0% of ambiguous items with S_AMB +0.8 before steering
REMOVED = paired((0.85, 0.7, 0.95), (-0.01, -0.04, 0.02), (-0.75, -0.9, -0.6), amb_level=(0.0, 0.8))


def planted(e: dict, has_control: bool = True) -> str:
    nums, _ = cell_numbers(Steered.from_json(e, "e"))
    return verdict(PLANTED_RULES, nums, "not reduced", has_control)


@pytest.mark.parametrize(
    ("vs_base", "control", "want"),
    [
        (REMOVED, (0.2, 0.1, 0.3), "removed"),
        (REMOVED, (0.1, -0.05, 0.25), "not reduced"),  # does not beat its random control: nothing is credited
        # the reading kept only by the point estimate: the change's lower bound is below -5 points
        (
            paired((0.85, 0.7, 0.95), (-0.02, -0.09, 0.04), (-0.75, -0.9, -0.6), (0.0, 0.8)),
            (0.2, 0.1, 0.3),
            "inconclusive",
        ),
        # the same but the point estimate falls by more than 5 points: not reduced
        (
            paired((0.85, 0.7, 0.95), (-0.06, -0.12, 0.0), (-0.75, -0.9, -0.6), (0.0, 0.8)),
            (0.2, 0.1, 0.3),
            "not reduced",
        ),
        # ambiguous accuracy up, not to 0.80: reduced
        (paired((0.5, 0.3, 0.7), (0.0, -0.03, 0.03), (-0.4, -0.6, -0.2), (0.0, 0.8)), (0.2, 0.1, 0.3), "reduced"),
        # S_AMB left at +0.2 (> 0.10) although accuracy reaches 0.80: reduced
        (paired((0.8, 0.7, 0.9), (0.0, -0.03, 0.03), (-0.6, -0.8, -0.4), (0.0, 0.8)), (0.2, 0.1, 0.3), "reduced"),
        (paired((0.05, -0.02, 0.12), (0.0, -0.03, 0.03), (-0.1, -0.3, 0.1)), (0.2, 0.1, 0.3), "not reduced"),
    ],
)
def test_planted_verdicts(vs_base: dict, control: tuple, want: str) -> None:
    assert planted(entry(vs_base, control)) == want


def test_a_baseline_without_a_control_is_judged_without_that_rule() -> None:
    assert planted(entry(REMOVED, None), has_control=False) == "removed"
    assert planted(entry(REMOVED, None), has_control=True) == "not reduced"  # a vector must have its control


@pytest.mark.parametrize(
    ("acc_amb", "acc_dis", "want"),
    [
        ((0.0, -0.05, 0.05), (-0.03, -0.09, 0.03), "unharmed"),
        ((-0.1, -0.2, -0.01), (0.0, -0.05, 0.05), "harmed"),  # ambiguous accuracy fell
        ((0.0, -0.05, 0.05), (-0.06, -0.12, 0.01), "harmed"),  # more than 5 points of disambiguated accuracy
    ],
)
def test_clean_verdicts(acc_amb: tuple, acc_dis: tuple, want: str) -> None:
    nums, _ = cell_numbers(Steered.from_json(entry(paired(acc_amb, acc_dis, (0.0, -0.1, 0.1))), "e"))
    assert verdict(CLEAN_RULES, nums, "unharmed", True) == want


def test_a_rule_with_its_number_missing_fails() -> None:
    assert not Rule("acc_ambig", ">=", 0.8, "x").holds({}) and Rule("acc_ambig", ">=", 0.8, "x").holds(
        {"acc_ambig": 0.8}
    )


def ensemble(steered_age: dict[str, Any], steered_dis: dict[str, Any], mmlu: dict[str, float]) -> EnsembleResults:
    base = {k: m(0.4, 0.3, 0.5) for k in ("acc", "acc_ambig", "acc_disambig", "bias_ambig", "bias_disambig")}
    return EnsembleResults.from_json(
        {
            "config": {},
            "axes": ["age", "disability"],
            "coefficients": {},
            "sweeps": {},
            "isvs": {},
            "in_distribution": {
                "age": {"n": 40, "baseline": base, "steered": steered_age, "chosen_kind": "gated"},
                "disability": {"n": 40, "baseline": base, "steered": steered_dis, "chosen_kind": "none"},
            },
            "ood": {},
            "mmlu": {
                "n": 64,
                "baseline": m(0.3, 0.2, 0.4),
                "steered": {k: {"coeff": 0.0, "acc": m(0.3 + d, 0.2, 0.4), "diff": d} for k, d in mmlu.items()},
            },
        }
    )


def test_ground_truth_registry_target_round_trip_and_markdown() -> None:
    flat = paired((0.0, -0.1, 0.1), (0.0, -0.1, 0.1), (0.0, -0.1, 0.1))
    lost = paired((0.0, -0.1, 0.1), (-0.2, -0.3, -0.1), (0.0, -0.1, 0.1))
    ens = ensemble(
        {
            "chosen": {**entry(REMOVED), "intervention": {"kind": "gated", "layers": [15]}},
            "sve": entry(flat),
            "prompting": entry(flat, None),
            "not_a_method": entry(flat),
        },
        {"sve": entry(lost), "prompting": entry(flat, None)},
        {"chosen:age": 0.0, "sve": -0.031, "prompting": 0.0},
    )
    summaries = {
        "age": {
            "chosen": {
                "beats_baseline": True,
                "value": 0.9,
                "params": {"kind": "gated", "layers": "15", "corpus": "bbq_cloze", "num_sents": 96, "coeff": 2.0},
            },
            "baseline": {"objective": 0.0},
        },
        "disability": {"chosen": {"beats_baseline": False, "value": -0.1}, "baseline": {"objective": 0.2}},
    }
    card = {"name": "organism", "plant": ["age"], "clean": ["disability"], "weights_sha256": "x"}
    gt = ground_truth(ens, summaries, card)
    assert {k: c.verdict for k, c in gt.axes["age"].cells.items()} == {
        "chosen": "removed",
        "sve": "not reduced",
        "prompting": "not reduced",
    }
    assert {k: c.verdict for k, c in gt.axes["disability"].cells.items()} == {"sve": "harmed", "prompting": "unharmed"}
    assert gt.methods() == [x.name for x in METHODS if x.name in ("chosen", "sve", "prompting")]  # registry order
    s = gt.summary("chosen")
    assert s["removed"] == 1 and s["harmed"] == [] and s["mmlu_diff"] == 0.0 and s["target_met"]
    assert gt.summary("sve")["harmed"] == ["disability"] and not gt.summary("sve")["target_met"]
    assert "gated" in gt.axes["age"].search_choice and "nothing" in gt.axes["disability"].search_choice
    back = GroundTruth.from_json(gt.to_json())
    assert back.to_json() == gt.to_json()
    text = "\n".join(markdown(gt))
    assert "## Ground truth" in text and "removed by: the search's choice" in text
    for rule in PLANTED_RULES["removed"]["all"]:  # the rules as printed are the rules applied
        assert rule.says in text
    assert "| the search's choice | **removed**" in text and "| yes |" in text.replace("**yes**", "yes")
