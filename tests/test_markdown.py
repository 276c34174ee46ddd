"""Tests for lens_steer.report.markdown: numbers in results.md equal the inputs, sections in reading order, missing
stages."""

from __future__ import annotations

import re
from typing import Any

import pytest
from _results_fixtures import COUNTS, META, N, full_results, typed

from lens_steer.pipeline.results import Results
from lens_steer.report.markdown import results_markdown, sections
from lens_steer.report.paper import PAPER_AXES, PAPER_AXIS_LABELS, PAPER_MODELS, PAPER_TABLE


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


def test_markdown_table_numbers_equal_the_inputs(results: dict[str, Any]) -> None:
    md = next(s.markdown for s in sections(typed(results)) if s.key == "paper_table")
    for axis in PAPER_AXES:
        cells = table_row(md, PAPER_AXIS_LABELS[axis])
        # by construction: accuracy = (correct ambiguous + correct disambiguated) / N
        for cell, kind in zip(cells[1:4], ("base", "isv", "sve")):
            value, lo, hi = parse_ci(cell)
            assert value == pytest.approx(round(100 * sum(COUNTS[kind]) / N, 1), abs=1e-9)
            assert lo <= value <= hi
        base = results["ensemble"]["in_distribution"][axis]["baseline"]["acc"]
        assert parse_ci(cells[1])[1:] == pytest.approx(
            (round(100 * base["ci_low"], 1), round(100 * base["ci_high"], 1)), abs=1e-9
        )
        for model, cell in zip(PAPER_MODELS, cells[4:]):
            r = PAPER_TABLE["models"][model]["bbq"][axis]
            assert [float(x) for x in cell.split("/")] == [r["baseline"], r["isv"], r["sve"]]
    assert "other models' published numbers" in md and "lm-evaluation-harness" in results_markdown(typed(results))


def test_markdown_gain_split_equals_hand_counts(results: dict[str, Any]) -> None:
    md = results_markdown(typed(results))
    row = next(line for line in md.splitlines() if line.startswith("| age | ISV |"))
    cells = [c.strip() for c in row.strip().strip("|").split("|")]
    gain, amb, dis = (parse_ci(c.replace("+", ""))[0] for c in cells[4:7])
    (ba, bd), (ia, idis) = COUNTS["base"], COUNTS["isv"]
    assert gain == pytest.approx(round(100 * (ia + idis - ba - bd) / N, 1), abs=1e-9)
    assert amb == pytest.approx(round(100 * (ia - ba) / (N / 2), 1), abs=1e-9)
    assert dis == pytest.approx(round(100 * (idis - bd) / (N / 2), 1), abs=1e-9)
    assert cells[-1].startswith("better on ambiguous")


def test_sections_open_with_the_claims_then_capability_then_details(results: dict[str, Any]) -> None:
    keys = [s.key for s in sections(typed(results))]
    assert keys == ["head", "scope", "claims", "capability", "paper_table", "gains", "ood", "mmlu", "run"]
    md = results_markdown(typed(results))
    assert (
        md.index("# lens_steer reproduction: test-model")
        < md.index("## What this run can show")
        < md.index("## Claims of Siddique et al. (2025)")
        < md.index("## How capable")
        < md.index("## BBQ accuracy")
        < md.index("## Gains split")
        < md.index("## How this run was made")
        < md.index("- budget: smoke")
    )
    headings = [line for line in md.splitlines() if line.startswith("#")]
    assert len(headings) == len(set(headings))
    assert "arXiv 2503.05371" in md and "method.md" not in md


def test_the_ground_truth_comes_first_on_an_organism(results: dict[str, Any]) -> None:
    from lens_steer.pipeline.ground_truth import ground_truth
    from lens_steer.pipeline.results_entries import EnsembleResults
    from lens_steer.report.ground_truth import markdown as ground_truth_markdown

    card = {"name": "tiny-organism", "plant": ["age"], "clean": [a for a in PAPER_AXES if a != "age"]}
    truth = ground_truth(EnsembleResults.from_json(results["ensemble"]), results["isv"], card)
    gt = truth.to_json()
    md = results_markdown(typed({**results, "ground_truth": gt}))
    section = "\n".join(ground_truth_markdown(truth)).strip()
    assert section in md and md.index("## What this run can show") < md.index(section) < md.index("## Claims of")
    assert md.index("## Claims of") < md.index("## BBQ accuracy")
    keys = [s.key for s in sections(typed({**results, "ground_truth": gt}))]
    assert keys[:4] == ["head", "scope", "ground_truth", "claims"]


def test_missing_stages_say_not_run() -> None:
    for res in (Results(), typed({"meta": META})):
        md = results_markdown(res)
        assert (
            "Baseline evaluation: not run" in md
            and "MMLU: not run" in md
            and "Out-of-distribution evaluation: not run" in md
        )
        assert md.count("NOT RUN") == 4
        assert table_row(md, "age")[1:4] == ["not run"] * 3
