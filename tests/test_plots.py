"""Tests for lens_steer.report.plots: each figure's traces carry the input values; HTML is written whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import pytest

from lens_steer.errors import LensSteerError
from lens_steer.report.plots import (
    cosine_heatmap,
    integer_axis,
    integer_step,
    norms_figure,
    pca_scatter,
    probe_figure,
    series_style,
    sweep_heatmap,
    write_figure,
)

BASE = {"kind": "baseline", "layer": None, "coeff": 0.0, "metric": "acc", "value": 0.5, "ci_low": 0.4, "ci_high": 0.6}


def cell(layer: int, coeff: float, value: float) -> dict:
    return {
        "kind": "cell",
        "layer": layer,
        "coeff": coeff,
        "metric": "acc",
        "value": value,
        "ci_low": value - 0.1,
        "ci_high": value + 0.1,
        "vector_norm": 1.0,
    }


def test_sweep_heatmap_places_each_cell_and_centres_on_the_baseline() -> None:
    rows = [
        cell(3, -1.0, 0.4),
        cell(3, 0.0, 0.5),
        cell(3, 1.0, 0.7),
        cell(5, -1.0, 0.45),
        cell(5, 0.0, 0.5),
        cell(5, 1.0, 0.55),
    ]
    fig = sweep_heatmap(rows, BASE, title="age")
    (hm,) = fig.data
    assert list(hm.x) == ["-1.0", "0.0", "1.0"] and list(hm.y) == ["3", "5"]
    np.testing.assert_allclose(np.array(hm.z), [[0.4, 0.5, 0.7], [0.45, 0.5, 0.55]])
    assert hm.zmid == 0.5 and hm.zmin == pytest.approx(0.3) and hm.zmax == pytest.approx(0.7)
    assert "0.500" in fig.layout.title.text and len(fig.layout.shapes) == 1  # the outlined coeff-0 column
    assert fig.layout.shapes[0].x0 == 0.5 and fig.layout.shapes[0].x1 == 1.5
    with pytest.raises(LensSteerError):
        sweep_heatmap([], BASE)


def test_missing_sweep_cells_stay_empty() -> None:
    fig = sweep_heatmap([cell(1, 1.0, 0.6), cell(2, 2.0, 0.3)], BASE)
    z = np.array(fig.data[0].z, dtype=float)
    assert z[0, 0] == 0.6 and z[1, 1] == 0.3 and np.isnan(z[0, 1]) and np.isnan(z[1, 0])
    assert len(fig.layout.shapes) == 0  # no coeff-0 column to mark


def test_cosine_heatmap_carries_the_matrix() -> None:
    m = np.array([[1.0, 0.25], [0.25, 1.0]])
    fig = cosine_heatmap(["age", "ses"], m, title="t", note="random ~0.04")
    (hm,) = fig.data
    np.testing.assert_array_equal(np.array(hm.z), m)
    assert list(hm.x) == ["age", "ses"] and (hm.zmin, hm.zmax) == (-1, 1) and "random" in fig.layout.title.text
    with pytest.raises(LensSteerError, match="does not match"):
        cosine_heatmap(["a"], m)


def test_norms_figure_one_sorted_line_per_axis() -> None:
    rows = [
        {"axis": "age", "layer": 1, "norm": 2.0},
        {"axis": "age", "layer": 0, "norm": 1.0},
        {"axis": "ses", "layer": 0, "norm": 3.0},
    ]
    fig = norms_figure(rows)
    assert [t.name for t in fig.data] == ["age", "ses"] and fig.layout.showlegend
    assert fig.data[0].line.color != fig.data[1].line.color and fig.data[0].line.dash != fig.data[1].line.dash
    assert list(fig.data[0].x) == [0, 1] and list(fig.data[0].y) == [1.0, 2.0] and list(fig.data[1].y) == [3.0]


def test_pca_scatter_points_and_axis_titles() -> None:
    coords = np.array([[0.1, -0.2], [0.3, 0.4], [-0.4, -0.2]])
    fig = pca_scatter(["a", "b", "c"], coords, [0.6, 0.25])
    np.testing.assert_array_equal(np.array(fig.data[0].x), coords[:, 0])
    np.testing.assert_array_equal(np.array(fig.data[0].y), coords[:, 1])
    assert (
        list(fig.data[0].text) == ["a", "b", "c"]
        and "60.0%" in fig.layout.xaxis.title.text
        and "25.0%" in fig.layout.yaxis.title.text
    )


def test_probe_figure_lines_bands_and_chance() -> None:
    rows = [
        {"task": "persona", "layer": 1, "acc": 0.9, "ci_low": 0.8, "ci_high": 0.95},
        {"task": "persona", "layer": 0, "acc": 0.6, "ci_low": 0.5, "ci_high": 0.7},
        {"task": "letter control", "layer": 0, "acc": 0.5, "ci_low": 0.4, "ci_high": 0.6},
    ]
    fig = probe_figure(rows)
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    bands = [t for t in fig.data if t.fill == "toself"]
    assert [t.name for t in lines] == ["persona", "letter control"]
    assert list(lines[0].x) == [0, 1] and list(lines[0].y) == [0.6, 0.9]
    assert list(bands[0].y) == [0.7, 0.95, 0.8, 0.5]  # upper bounds left to right, then lower bounds back
    assert lines[1].line.dash == "dot"
    assert any(s.y0 == 0.5 and s.y1 == 0.5 for s in fig.layout.shapes)
    assert [b.fillcolor for b in bands] == [t.line.color for t in lines]  # each band in its line's colour
    assert lines[0].line.color != lines[1].line.color and fig.layout.xaxis.dtick == 1  # layers 0..1


def test_integer_ticks_are_whole_counts_and_at_most_twelve() -> None:
    for span in (1, 3, 12, 13, 24, 25, 49, 50, 61, 120, 999, 1500):
        step = integer_step(span)
        assert isinstance(step, int) and step >= 1 and span / step <= 12
        smaller = [s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500) if s < step]
        assert all(span / s > 12 for s in smaller)  # the smallest such step
    assert integer_axis(1, 4) == {"tickmode": "linear", "tick0": 0, "dtick": 1, "tickformat": ",d"}
    assert integer_axis(1, 50)["dtick"] == 5 and integer_axis(0, 30)["dtick"] == 5


def test_series_look_apart() -> None:
    looks = [(st["line"]["color"], st["line"]["dash"], st["marker"]["symbol"]) for st in map(series_style, range(280))]
    assert len(set(looks)) == 280  # colour, dash and marker cycle at coprime periods
    assert len({c for c, _, _ in looks[:8]}) == 8 and len({d for _, d, _ in looks[:5]}) == 5


def test_write_figure_is_complete_html(tmp_path: Path) -> None:
    fig = go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))
    standalone = write_figure(fig, tmp_path / "a.html").read_text()
    cdn = write_figure(fig, tmp_path / "b.html", include_plotlyjs="cdn").read_text()
    assert standalone.rstrip().endswith("</html>") and len(standalone) > 1_000_000  # plotly.js embedded
    assert "cdn.plot.ly" in cdn and len(cdn) < 100_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.html", "b.html"]  # no temporary files left behind
