"""Tests for lens_steer.report.paper: the published numbers equal the paper's table (as docs/method.md copies it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lens_steer.report.paper import PAPER_AXIS_LABELS, PAPER_MODELS, PAPER_TABLE


def _method_md() -> Path | None:
    for p in (
        Path(__file__).resolve().parents[2] / "shared" / "docs" / "method.md",
        Path("/work/shared/docs/method.md"),
    ):
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
