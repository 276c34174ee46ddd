"""Tests for lens_steer.report: numbers in results.md equal the inputs, claim verdicts, HTML structure, missing stages."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import plotly.offline
import pytest

from lens_steer.metrics import BbqPrediction, bbq_metrics, metrics_to_dict, paired_comparison
from lens_steer.report.claims import (
    PAPER_AXES,
    PAPER_AXIS_LABELS,
    PAPER_MODELS,
    PAPER_TABLE,
    Interval,
    ReportError,
    context_reading,
    judge_claims,
    judge_difference,
    judge_gain,
    judge_retention,
    mean_difference,
    paired_proportion_interval,
    report_html,
    results_markdown,
    write_report,
)

N = 120  # items per axis: 60 ambiguous (label = unknown, index 2), 60 disambiguated (label 1)
NB = 200


# ----------------------------------------------------------------------------- fixtures from real metric functions
def preds(axis: str, correct_ambig: int, correct_disambig: int, unknown_disambig: int = 0) -> list[BbqPrediction]:
    """N predictions: the first `correct_ambig` ambiguous and `correct_disambig` disambiguated ones right;
    wrong disambiguated answers are "unknown" for the first `unknown_disambig` of them, else the biased answer 0."""
    out = []
    for i in range(N):
        amb = i < N // 2
        label = 2 if amb else 1
        k = i if amb else i - N // 2
        if amb:
            pred = 2 if k < correct_ambig else 0
        else:
            wrong = k - correct_disambig
            pred = 1 if k < correct_disambig else (2 if wrong < unknown_disambig else 0)
        out.append(BbqPrediction(i, axis, "ambig" if amb else "disambig", "neg", pred, label, 2, 0, ()))
    return out


def entry(base: list[BbqPrediction], steered: list[BbqPrediction], controls: list[list[BbqPrediction]], coeff: float = 1.0) -> dict[str, Any]:
    """A steered entry in the shape lens_steer.ensemble writes."""
    return {
        "coeff": coeff,
        "vs_base": metrics_to_dict(paired_comparison(base, steered, n_boot=NB, seed=0)),
        "controls": [
            {"seed": s, "vs_base": metrics_to_dict(paired_comparison(base, c, n_boot=NB, seed=0)),
             "steered_vs_control": metrics_to_dict(paired_comparison(c, steered, n_boot=NB, seed=0))}
            for s, c in enumerate(controls, 1)
        ],
    }  # fmt: skip


# per axis: (correct ambig, correct disambig) of baseline, ISV and SVE; control = baseline
COUNTS = {"base": (10, 30), "isv": (40, 34), "sve": (50, 36), "merged": (12, 30)}


def in_distribution_row(axis: str, isv_counts: tuple[int, int] | None = None, control_counts: tuple[int, int] | None = None) -> dict[str, Any]:
    base = preds(axis, *COUNTS["base"])
    ctrl = preds(axis, *(control_counts or COUNTS["base"]))
    steered = {
        "isv": entry(base, preds(axis, *(isv_counts or COUNTS["isv"])), [ctrl]),
        "sve": entry(base, preds(axis, *COUNTS["sve"]), [ctrl]),
        "merged": entry(base, preds(axis, *COUNTS["merged"]), [ctrl]),
    }
    return {"n": N, "baseline": metrics_to_dict(bbq_metrics(base, n_boot=NB, seed=0)), "steered": steered}


def full_results(rows: dict[str, Any] | None = None) -> dict[str, Any]:
    rows = rows if rows is not None else {a: in_distribution_row(a) for a in PAPER_AXES}
    ood_base = preds("Race_x_gender", 10, 30)
    ood = {"Race_x_gender": {"n": N, "source": "generated", "baseline": metrics_to_dict(bbq_metrics(ood_base, n_boot=NB)),
                             "steered": {"sve": entry(ood_base, preds("Race_x_gender", 45, 35), [ood_base])}},
           "Race_x_SES": {"skipped": "no data"}}  # fmt: skip
    mmlu = {"n": 1000, "baseline": {"value": 0.30, "ci_low": 0.27, "ci_high": 0.33, "n": 1000},
            "steered": {"sve": {"coeff": 1.0, "acc": {"value": 0.30, "ci_low": 0.27, "ci_high": 0.33, "n": 1000}, "diff": 0.0,
                                "mcnemar": {"p": 1.0, "gained": 1, "lost": 1}}}}  # fmt: skip
    return {
        "meta": {"model": "test-model", "budget": "smoke", "seconds": 1.0, "scoring": "cloze", "bias_variant": "lm_eval"},
        "capability": {a: {**{k: r["baseline"][k] for k in ("acc", "acc_ambig", "acc_disambig", "unknown_rate_ambig", "unknown_rate_disambig", "bias_ambig", "bias_disambig")}, "n": N}
                       for a, r in rows.items()},  # fmt: skip
        "isv": {"age": {"history": [0.3, None, 0.5, 0.4], "best_value": 0.5}, "ses": {"history": [0.2, 0.25]}},
        "ensemble": {"config": {"n_boot": NB}, "in_distribution": rows, "ood": ood, "mmlu": mmlu},
        "sweep": {"axis": "age", "baseline": {"kind": "baseline", "layer": None, "coeff": 0.0, "metric": "acc", "value": 0.3, "ci_low": 0.2, "ci_high": 0.4},
                  "rows": [{"kind": "cell", "layer": 1, "coeff": c, "metric": "acc", "value": 0.3 + c / 10, "ci_low": 0.2, "ci_high": 0.5, "vector_norm": 1.0} for c in (-1.0, 0.0, 1.0)]},
        "geometry": {"layer": 2, "axes": ["age", "ses"], "cosine": [[1.0, 0.3], [0.3, 1.0]], "random_reference": 0.05},
    }  # fmt: skip


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return full_results()


def parse_ci(cell: str) -> tuple[float, float, float]:
    m = re.fullmatch(r"(-?[\d.]+) \[(-?[\d.]+), (-?[\d.]+)\]", cell.strip())
    assert m, cell
    return tuple(float(x) for x in m.groups())  # type: ignore[return-value]


def table_row(md: str, first: str) -> list[str]:
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r}")


# ----------------------------------------------------------------------------- the paper's table
def _method_md() -> Path | None:
    for p in (Path(__file__).resolve().parents[2] / "shared" / "docs" / "method.md", Path("/work/shared/docs/method.md")):
        if p.is_file():
            return p
    return None


def test_paper_table_matches_method_md() -> None:
    path = _method_md()
    if path is None:
        pytest.skip("missing doc: docs/method.md not found")
    text = path.read_text().split("## 6.")[1].split("## 7.")[0]
    found = 0
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        label_to_axis = {v: k for k, v in PAPER_AXIS_LABELS.items()}
        if line.startswith("|") and cells[0] in label_to_axis:
            axis = label_to_axis[cells[0]]
            for model, cell in zip(PAPER_MODELS, cells[1:]):
                b, i, s = (float(x) for x in cell.split("/"))
                assert PAPER_TABLE["models"][model]["bbq"][axis] == {"baseline": b, "isv": i, "sve": s}
            found += 1
    assert found == 9


def test_paper_mean_gains_follow_from_the_table() -> None:
    for model in PAPER_MODELS:
        rows = PAPER_TABLE["models"][model]["bbq"].values()
        for kind in ("isv", "sve"):
            mean = sum(r[kind] - r["baseline"] for r in rows) / 9
            assert abs(mean - PAPER_TABLE["models"][model]["mean_gain"][kind]) <= 0.06  # published to one decimal


# ----------------------------------------------------------------------------- results.md numbers
def test_markdown_table_numbers_equal_the_inputs(results: dict[str, Any]) -> None:
    md = results_markdown(results)
    for axis in PAPER_AXES:
        cells = table_row(md, PAPER_AXIS_LABELS[axis])
        # by construction: accuracy = (correct ambiguous + correct disambiguated) / N
        for cell, kind in zip(cells[1:4], ("base", "isv", "sve")):
            value, lo, hi = parse_ci(cell)
            assert value == pytest.approx(round(100 * sum(COUNTS[kind]) / N, 1), abs=1e-9)
            assert lo <= value <= hi
        base = results["ensemble"]["in_distribution"][axis]["baseline"]["acc"]
        assert parse_ci(cells[1])[1:] == pytest.approx((round(100 * base["ci_low"], 1), round(100 * base["ci_high"], 1)), abs=1e-9)
        for model, cell in zip(PAPER_MODELS, cells[4:]):
            r = PAPER_TABLE["models"][model]["bbq"][axis]
            assert [float(x) for x in cell.split("/")] == [r["baseline"], r["isv"], r["sve"]]
    assert "other models' published numbers" in md and "lm-evaluation-harness" in md


def test_markdown_gain_split_equals_hand_counts(results: dict[str, Any]) -> None:
    md = results_markdown(results)
    row = next(line for line in md.splitlines() if line.startswith("| age | ISV |"))
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    gain, amb, dis = (parse_ci(c.replace("+", ""))[0] for c in cells[4:7])
    (ba, bd), (ia, idis) = COUNTS["base"], COUNTS["isv"]
    assert gain == pytest.approx(round(100 * (ia + idis - ba - bd) / N, 1), abs=1e-9)
    assert amb == pytest.approx(round(100 * (ia - ba) / (N / 2), 1), abs=1e-9)
    assert dis == pytest.approx(round(100 * (idis - bd) / (N / 2), 1), abs=1e-9)
    assert cells[-1].startswith("better on ambiguous")


# ----------------------------------------------------------------------------- verdict logic
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
    g, l, n = 12.5, 4.5, 102
    se = math.sqrt(g + l - (g - l) ** 2 / n) / n
    assert got.value == pytest.approx(0.08)
    assert (got.lo, got.hi) == pytest.approx(((g - l) / n - 1.959963984540054 * se, (g - l) / n + 1.959963984540054 * se))
    none_changed = paired_proportion_interval(0, 0, 8)
    assert none_changed.lo < 0 < none_changed.hi  # no collapse to a point on a tiny sample
    with pytest.raises(ReportError):
        paired_proportion_interval(5, 6, 10)


def test_context_reading_tells_unknown_shift_from_debiasing() -> None:
    base = preds("age", 10, 40)
    shift = metrics_to_dict(paired_comparison(base, preds("age", 40, 10, unknown_disambig=50), n_boot=NB))
    debias = metrics_to_dict(paired_comparison(base, preds("age", 40, 40), n_boot=NB))
    assert context_reading(shift).startswith('answers "unknown" more')
    assert context_reading(debias).startswith("better on ambiguous")


def _claims(results: dict[str, Any]) -> dict[str, Any]:
    return {c.key: c for c in judge_claims(results)}


def test_claims_on_a_clear_win(results: dict[str, Any]) -> None:
    c = _claims(results)
    assert c["isv_every_axis"].verdict == "held" and len(c["isv_every_axis"].evidence) == 9
    assert c["sve_beats_isv"].verdict == "held"  # SVE gains more than ISV on every axis; MMLU: 1 item gained, 1 lost of 1000
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


# ----------------------------------------------------------------------------- HTML and files
def test_html_has_one_plotly_copy_and_one_div_per_figure(results: dict[str, Any]) -> None:
    page = report_html(results)
    js = plotly.offline.get_plotlyjs()
    assert page.count(js[:200]) == 1 and page.count(js[-200:]) == 1
    assert page.count('<script type="text/javascript">' + js[:50]) == 1
    ids = re.findall(r'<div id="(fig-[a-z]+)"', page)
    assert sorted(ids) == ["fig-accuracy", "fig-cosine", "fig-history", "fig-sweep"]
    assert "<script src=" not in page and page.count("<script") == 1 + len(ids)  # the library, then one per figure


def test_write_report_writes_both_files(results: dict[str, Any], tmp_path: Path) -> None:
    paths = write_report(results, tmp_path / "out")
    assert paths["markdown"].read_text() == results_markdown(results)
    assert paths["html"].name == "report.html" and paths["html"].stat().st_size > len(plotly.offline.get_plotlyjs())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "results.md"]


def test_missing_stages_say_not_run(tmp_path: Path) -> None:
    for res in ({}, {"meta": {"model": "m"}}):
        md = results_markdown(res)
        assert "Baseline evaluation: not run" in md and "MMLU: not run" in md and "Out-of-distribution evaluation: not run" in md
        assert md.count("NOT RUN") == 4
        assert table_row(md, "age")[1:4] == ["not run"] * 3
        page = report_html(res)
        assert re.findall(r'<div id="fig-', page) == [] and page.count("not run") >= 4
    only_geometry = {"geometry": full_results({})["geometry"]}
    assert re.findall(r'<div id="(fig-[a-z]+)"', report_html(only_geometry)) == ["fig-cosine"]
    write_report({}, tmp_path)
    assert (tmp_path / "results.md").is_file()


def test_bad_input_raises_one_line_errors() -> None:
    with pytest.raises(ReportError, match="mapping"):
        results_markdown([1, 2])  # type: ignore[arg-type]
    broken = {"ensemble": {"in_distribution": {"age": {"n": 3}}}}
    with pytest.raises(ReportError, match="malformed|lacks") as e:
        results_markdown(broken)
    assert "\n" not in str(e.value)
