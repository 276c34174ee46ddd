"""Tests for lens_steer.pipeline.results: results.json reads into typed objects and writes back unchanged; an old or
partial file is one line naming the missing part; a fault in the report itself is not dressed up as a stale file."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from _results_fixtures import full_results, typed

from lens_steer.errors import ResultsError
from lens_steer.pipeline.results import Results
from lens_steer.pipeline.results_entries import BbqBlock, Skipped


def test_results_round_trip_unchanged_key_order_included() -> None:
    raw = json.loads(json.dumps(full_results()))
    back = typed(raw).to_json()
    assert back == raw and json.dumps(back) == json.dumps(raw)
    t = typed(raw)
    assert isinstance(t.ensemble.ood["Race_x_SES"], Skipped) and isinstance(t.ensemble.ood["Race_x_gender"], BbqBlock)
    entry = raw["ensemble"]["in_distribution"]["age"]["steered"]["isv"]
    assert (
        t.ensemble.in_distribution["age"].steered["isv"].gain.value
        == entry["vs_base"]["overall"]["acc"]["diff"]["value"]
    )


def test_absent_stages_are_none() -> None:
    assert Results.from_json({}) == Results()
    assert Results.from_json({"sweep": None, "geometry": {}}).sweep is None
    assert Results().to_json() == {}


@pytest.mark.parametrize(
    ("path", "named"),
    [
        (["ensemble", "in_distribution", "age", "baseline"], "ensemble.in_distribution.age lacks 'baseline'"),
        (
            ["ensemble", "in_distribution", "age", "steered", "isv", "vs_base", "ambig"],
            "ensemble.in_distribution.age.steered.isv.vs_base lacks 'ambig'",
        ),
        (["ensemble", "mmlu", "steered", "sve", "acc"], "ensemble.mmlu.steered.sve lacks 'acc'"),
        (["meta", "scoring"], "meta lacks 'scoring'"),
        (["geometry", "cosine"], "geometry lacks 'cosine'"),
        (["isv", "age", "history"], "isv.age lacks 'history'"),
    ],
)
def test_a_partial_stage_is_one_line_naming_the_missing_part(path: list[str], named: str) -> None:
    raw = copy.deepcopy(full_results())
    block: Any = raw
    for key in path[:-1]:
        block = block[key]
    del block[path[-1]]
    with pytest.raises(ResultsError) as e:
        Results.from_json(raw)
    msg = str(e.value)
    assert named in msg and "\n" not in msg and "lens-steer reproduce" in msg


def test_a_part_of_the_wrong_kind_is_named() -> None:
    raw = copy.deepcopy(full_results())
    raw["ensemble"]["in_distribution"]["age"]["n"] = "120"
    with pytest.raises(ResultsError, match=r"ensemble\.in_distribution\.age\.n is '120', not a whole number"):
        Results.from_json(raw)
    with pytest.raises(ResultsError, match="the file is list, not a JSON object"):
        Results.from_json([1, 2])


def test_a_fault_in_the_report_surfaces_as_itself() -> None:
    from lens_steer.report.markdown import results_markdown

    t = typed(full_results())
    broken = Results(
        meta=t.meta, ensemble=type(t.ensemble)(**{**t.ensemble.__dict__, "in_distribution": {"age": "not a block"}})
    )  # type: ignore[arg-type]
    with pytest.raises(AttributeError):  # a programming error, not "re-run the pipeline"
        results_markdown(broken)


def test_an_axis_whose_search_finished_no_additive_trial_reads_and_reports() -> None:
    """A search of several kinds may finish no additive trial (all pruned): its ISV fields are None, the file reads,
    round-trips, and the report's method table shows no ISV for that axis."""
    from lens_steer.report.markdown import results_markdown

    raw = copy.deepcopy(full_results())
    raw["isv"]["age"].update(best_value=None, params=None, coeff=None)
    t = Results.from_json(raw)
    assert t.isv is not None and t.isv["age"].best_value is None and t.isv["age"].params is None
    assert t.to_json() == raw
    results_markdown(t)  # renders without the additive ISV
    raw["isv"]["age"]["best_value"] = "none"
    with pytest.raises(ResultsError, match=r"isv\.age\.best_value is 'none', not a number"):
        Results.from_json(raw)
