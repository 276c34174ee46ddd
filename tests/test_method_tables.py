"""Tests for lens_steer.report.method_tables (and the steerability figure): the per-item steerability table and
histogram recomputed from the per-item margins, an old results.json without steerability or baselines still
renders, a damaged steerability part is a one-line error, and the v2 table's cells and means by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _results_fixtures import N, full_results, preds, typed, with_logprobs, with_steerability

from lens_steer.errors import ResultsError
from lens_steer.report.markdown import results_markdown
from lens_steer.report.method_tables import STEER_HEADER, steerability_entries, v2_table_lines
from lens_steer.report.verdicts import fmt_ci


@pytest.fixture()
def steered_results(tmp_path: Path) -> tuple[dict, Path]:
    """The fixture results with the age axis's ISV and a prompting baseline judged by
    lens_steer.pipeline.evaluate.judged_entry (per-item margins under `tmp_path`)."""
    return with_steerability(full_results(), tmp_path), tmp_path


def _items(folder: Path, name: str) -> list[dict]:
    return [json.loads(x) for x in (folder / name).read_text().splitlines()]


def test_steerability_table_and_histogram_from_the_per_item_margins(steered_results) -> None:
    res, folder = steered_results
    results = typed(res)
    entries = {(t, m): st for t, m, st in steerability_entries(results)}
    assert set(entries) == {("age", "isv"), ("age", "prompting")}
    md = results_markdown(results)
    section = md.split("## Per-item steerability", 1)[1].split("\n## ", 1)[0]
    for method, label in (("isv", "ISV"), ("prompting", "prompting (baseline)")):
        st = entries[("age", method)]
        items = _items(folder, st.items_file)
        deltas = np.array([i["steered"] - i["base"] for i in items])
        assert st.wrong_way_share.value == pytest.approx(float((deltas < 0).mean()))
        amb = np.array([d for d, i in zip(deltas, items) if i["context_condition"] == "ambig"])
        assert st.wrong_way_share_by_condition["ambig"].value == pytest.approx(float((amb < 0).mean()))
        assert st.mean_change.value == pytest.approx(float(deltas.mean()))
        counts, _ = np.histogram(deltas, bins=len(st.histogram["counts"]))
        assert st.histogram["counts"] == counts.tolist() and sum(counts) == N
        line = next(x for x in section.splitlines() if x.startswith(f"| age | {label} |"))
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[STEER_HEADER.index("wrong-way share")] == fmt_ci(_interval(st.wrong_way_share))
    from lens_steer.report.figures import figures

    fig = figures(results)["steerability"]
    bars = {t.name.split(" (wrong way")[0]: t for t in fig.data}
    isv_items = _items(folder, entries[("age", "isv")].items_file)
    assert sum(bars["ISV"].y) == len(isv_items)
    left = sum(
        y for x, y, w in zip(bars["ISV"].x, bars["ISV"].y, bars["ISV"].width) if x + w / 2 <= 0
    )  # bins wholly below 0
    assert left <= sum(i["steered"] < i["base"] for i in isv_items)
    assert "(wrong way" in bars["ISV"].name


def _interval(m):
    from lens_steer.report.verdicts import Interval

    return Interval.of(m)


def test_an_old_results_file_without_steerability_or_baselines_renders(tmp_path: Path) -> None:
    from lens_steer.report.figures import figures
    from lens_steer.report.html import write_report

    old = full_results()
    results = typed(old)
    assert results.meta.protocol == "sve-v1" and results.meta.splits == "ours"
    assert steerability_entries(results) == [] and "steerability" not in figures(results)
    assert "Per-item steerability" not in results_markdown(results) and v2_table_lines(results) == []
    page = write_report(results, tmp_path)["html"].read_text()
    assert "Per-item steerability" not in page and "Histograms of the per-item margin changes" not in page
    assert 'id="fig-steerability"' not in page  # its figure stands in its section, absent with it
    assert results.to_json() == old


def test_a_damaged_steerability_part_is_one_line_naming_it(steered_results) -> None:
    res, _ = steered_results
    edges = res["ensemble"]["in_distribution"]["age"]["steered"]["isv"]["steerability"]["histogram"]["edges"]
    last = edges.pop()
    with pytest.raises(
        ResultsError,
        match=r"^results.json: ensemble.in_distribution.age.steered.isv.steerability.histogram has \d+ counts but \d+ "
        r"edges; .*resumes\)$",
    ):
        typed(res)
    edges.append(last)
    del res["ensemble"]["in_distribution"]["age"]["steered"]["isv"]["steerability"]["wrong_way_share"]
    with pytest.raises(ResultsError, match="steered.isv.steerability lacks 'wrong_way_share'"):
        typed(res)


def test_v2_table_cells_and_means_by_hand(steered_results) -> None:
    from lens_steer.methods.protocol_v2 import V2_PAPER_BBQ, V2_PAPER_MEANS

    res, _ = steered_results
    res["meta"] = {**res["meta"], "protocol": "v2", "splits": "v2"}
    results = typed(res)
    assert results.to_json() == res
    lines = v2_table_lines(results)
    rows = {
        ln.split("|")[1].strip(): [c.strip() for c in ln.strip("|").split("|")] for ln in lines if ln.startswith("| ")
    }
    age = res["ensemble"]["in_distribution"]["age"]
    assert rows["age"][1:4] == [f"{V2_PAPER_BBQ['age'][k]:.1f}" for k in ("baseline", "prompting", "steering")]
    assert rows["age"][5] == fmt_ci(_interval(results.ensemble.in_distribution["age"].baseline["acc"]))
    assert rows["age"][6] == fmt_ci(
        _interval(results.ensemble.in_distribution["age"].steered["prompting"].vs_base.overall.acc.steered)
    )
    # the means over the axes the v2 files have (all of the fixture's but sexual orientation)
    v2_axes = [a for a in res["ensemble"]["in_distribution"] if a != "sexual_orientation"]
    base_mean = (
        100 * sum(res["ensemble"]["in_distribution"][a]["baseline"]["acc"]["value"] for a in v2_axes) / len(v2_axes)
    )
    assert rows["baseline"][1:3] == [f"{V2_PAPER_MEANS['baseline']['bbq']:.1f}", f"{base_mean:.1f} ({len(v2_axes)})"]
    assert (
        rows["prompting"][2]
        == f"{100 * age['steered']['prompting']['vs_base']['overall']['acc']['steered']['value']:.1f} (1)"
    )


def test_slopes_over_the_validation_sweep_by_polyfit(steered_results) -> None:
    from lens_steer.methods.steerability import correct_margin, slope_summary
    from lens_steer.report.method_tables import slope_rows

    res, _ = steered_results
    sweep = {
        -2.0: with_logprobs(preds("age", 20, 20), 5),
        0.0: with_logprobs(preds("age", 10, 30), 6),
        2.0: with_logprobs(preds("age", 40, 34), 7),
    }
    res["ensemble"]["sweeps"] = {"sve": {"rows": [], "best": 2.0, "slopes": {"age": slope_summary(sweep, n_boot=100)}}}
    margins = np.array([[correct_margin(p) for p in sweep[c]] for c in (-2.0, 0.0, 2.0)])
    slopes = np.polyfit([-2.0, 0.0, 2.0], margins, 1)[0]
    (row,) = slope_rows(typed(res))
    assert row[:4] == ["SVE", "age", "-2, 0, 2", N]
    assert row[4].startswith(f"{slopes.mean():+.3f} [")
    assert row[5].startswith(f"{100 * (slopes < 0).mean():.1f} [")
    assert "anti-steerable share" in results_markdown(typed(res))
