"""Tests for lens_steer.report.claims: the paper's four claims judged on results built from real metric functions."""

from __future__ import annotations

from typing import Any

import pytest
from _results_fixtures import COUNTS, full_results, in_distribution_row, typed

from lens_steer.report.claims import judge_claims
from lens_steer.report.paper import PAPER_AXES


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return full_results()


def _claims(results: dict[str, Any]) -> dict[str, Any]:
    return {c.key: c for c in judge_claims(typed(results))}


def test_claims_on_a_clear_win(results: dict[str, Any]) -> None:
    c = _claims(results)
    assert c["isv_every_axis"].verdict == "held" and len(c["isv_every_axis"].evidence) == 9
    assert (
        c["sve_beats_isv"].verdict == "held"
    )  # SVE gains more than ISV on every axis; MMLU: 1 item gained, 1 lost of 1000
    assert c["sve_ood"].verdict == "held"
    assert c["merged_worse"].verdict == "held"


def test_claims_one_clear_loss_one_crossing_and_a_win_that_does_not_beat_its_control() -> None:
    rows = {a: in_distribution_row(a) for a in PAPER_AXES}
    rows["age"] = in_distribution_row("age", isv_counts=(2, 20))  # clear loss on one axis
    assert _claims(full_results(rows))["isv_every_axis"].verdict == "not held"
    rows["age"] = in_distribution_row("age", isv_counts=(11, 30))  # one more item right: interval crosses 0
    assert _claims(full_results(rows))["isv_every_axis"].verdict == "inconclusive"
    rows["age"] = in_distribution_row("age", control_counts=COUNTS["isv"])  # the random control does as well
    claim = _claims(full_results(rows))["isv_every_axis"]
    assert claim.verdict == "inconclusive" and "random vector" in claim.evidence[0]


def test_claims_not_held_when_sve_and_merged_lose() -> None:
    rows = {a: in_distribution_row(a) for a in PAPER_AXES}
    res = full_results(rows)
    for r in rows.values():
        r["steered"]["sve"], r["steered"]["merged"] = r["steered"]["merged"], r["steered"]["sve"]
    c = _claims(res)
    assert c["sve_beats_isv"].verdict == "not held" and c["merged_worse"].verdict == "not held"


def test_fewer_axes_cannot_hold_every_axis() -> None:
    rows = {a: in_distribution_row(a) for a in PAPER_AXES[:2]}
    claim = _claims(full_results(rows))["isv_every_axis"]
    assert claim.verdict == "inconclusive" and "2 of 9" in claim.evidence[-1]


def test_no_intervals_make_every_run_claim_inconclusive() -> None:
    res = full_results()
    res["ensemble"]["config"]["n_boot"] = 0
    claims = judge_claims(typed(res))
    assert {c.verdict for c in claims} == {"inconclusive"} and all("n_boot=0" in c.evidence[-1] for c in claims)


def test_sve_that_does_not_beat_its_random_controls_is_not_a_held_claim() -> None:
    # every matched random control does as well as the SVE: its gain over baseline is real, not the direction's
    rows = {a: in_distribution_row(a, control_counts=COUNTS["sve"]) for a in PAPER_AXES}
    claim = _claims(full_results(rows))["sve_beats_isv"]
    assert claim.verdict == "inconclusive"
    assert any("above its matched random controls" in e for e in claim.evidence)
    assert _claims(full_results())["sve_beats_isv"].verdict == "held"  # the same results with plain controls: held


def test_ood_is_not_held_when_the_sve_loses_out_of_distribution() -> None:
    from _results_fixtures import entry, preds

    res = full_results()
    block = res["ensemble"]["ood"]["Race_x_gender"]
    base = preds("Race_x_gender", 10, 30)
    block["steered"]["sve"] = entry(base, preds("Race_x_gender", 2, 20), [base])  # 18 fewer right, none gained
    claim = _claims(res)["sve_ood"]
    assert claim.verdict == "not held"
    assert any(e.startswith("Race_x_gender (n=") and "not held" in e for e in claim.evidence)
    assert any("Race_x_SES: not run (no data)" in e for e in claim.evidence)
