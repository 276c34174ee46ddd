"""Tests for lens_steer.report.figures: the forest plot holds every gain and its control, as the results give them."""

from __future__ import annotations

import pytest
from _results_fixtures import full_results, typed

from lens_steer.report.figures import figures, forest_rows
from lens_steer.report.paper import PAPER_AXES


def test_forest_rows_are_every_gain_beside_its_control() -> None:
    raw = full_results()
    rows = forest_rows(typed(raw))
    blocks = raw["ensemble"]["in_distribution"]
    expected = [(a, v) for a in PAPER_AXES for v in blocks[a]["steered"]] + [("Race_x_gender (OOD)", "sve")]
    assert [(t, v) for t, v, _, _ in rows] == expected
    for target, vector, g, ctrl in rows:
        block = blocks[target] if target in blocks else raw["ensemble"]["ood"]["Race_x_gender"]
        e = block["steered"][vector]
        assert (g.value, g.lo, g.hi) == tuple(
            e["vs_base"]["overall"]["acc"]["diff"][k] for k in ("value", "ci_low", "ci_high")
        )
        (c,) = e["controls"]  # one control seed: its own gain, unpooled
        assert ctrl is not None and (ctrl.value, ctrl.lo, ctrl.hi) == tuple(
            c["vs_base"]["overall"]["acc"]["diff"][k] for k in ("value", "ci_low", "ci_high")
        )


def test_the_forest_figure_draws_each_row_and_its_control() -> None:
    fig = figures(typed(full_results()))["forest"]
    rows = forest_rows(typed(full_results()))
    steered = [t for t in fig.data if t.name != "matched random control"]
    (control,) = [t for t in fig.data if t.name == "matched random control"]
    assert sum(len(t.x) for t in steered) == len(control.x) == len(rows)
    assert sorted(x for t in steered for x in t.x) == pytest.approx(sorted(100 * g.value for _, _, g, _ in rows))
    assert list(fig.layout.yaxis.ticktext)[0] == "age · ISV"
