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


def test_the_search_history_counts_trials_in_whole_numbers() -> None:
    raw = full_results()
    fig = figures(typed(raw))["history"]
    assert [t.name for t in fig.data] == ["age", "ses"] and fig.layout.showlegend
    assert list(fig.data[0].x) == [1, 2, 3, 4] and list(fig.data[0].y) == [0.3, 0.3, 0.5, 0.5]  # best so far
    xaxis = fig.layout.xaxis
    assert (xaxis.tickmode, xaxis.tick0, xaxis.dtick, xaxis.tickformat) == ("linear", 0, 1, ",d")
    assert len({(t.line.color, t.line.dash, t.marker.symbol) for t in fig.data}) == len(fig.data)


def test_every_figure_has_a_legend_whose_entries_look_apart() -> None:
    figs = figures(typed(full_results()))
    forest = figs["forest"]
    assert forest.layout.showlegend and len({t.marker.symbol for t in forest.data}) == len(forest.data)
    bars = figs["accuracy"].data
    controls = [t for t in bars if t.name.endswith("random control")]
    assert controls and all(t.marker.pattern.shape == "/" for t in controls)
    assert all(not t.marker.pattern.shape for t in bars if t not in controls)
