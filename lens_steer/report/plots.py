"""Plotly figures built from result tables and arrays (never from models), and atomic HTML output.

`write_figure` embeds plotly.js in each file by default (`include_plotlyjs=True`, about 4.6 MB per
file) so a figure opens offline and keeps working when the CDN changes; pass "cdn" for small files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from lens_steer.errors import LensSteerError
from lens_steer.files import atomic_write_text

# one look per series, so lines stay apart in grey print and for colour-blind readers: Okabe-Ito colours, with the
# dash and marker cycling at other periods (8, 5 and 7 entries: no two of the first 280 series look the same)
SERIES_COLOURS: tuple[str, ...] = (
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#F0E442",
)
SERIES_DASHES: tuple[str, ...] = ("solid", "dash", "dot", "dashdot", "longdash")
SERIES_SYMBOLS: tuple[str, ...] = ("circle", "square", "diamond", "triangle-up", "x", "cross", "star")


def series_style(i: int) -> dict[str, Any]:
    """The line and marker of the `i`-th series of a figure (keyword arguments of go.Scatter)."""
    return {
        "line": {"color": SERIES_COLOURS[i % len(SERIES_COLOURS)], "dash": SERIES_DASHES[i % len(SERIES_DASHES)]},
        "marker": {"color": SERIES_COLOURS[i % len(SERIES_COLOURS)], "symbol": SERIES_SYMBOLS[i % len(SERIES_SYMBOLS)]},
    }


def integer_step(span: float, max_ticks: int = 12) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that cuts `span` into at most `max_ticks` steps."""
    k = 0
    while True:
        for m in (1, 2, 5):
            if span / (m * 10**k) <= max_ticks:
                return m * 10**k
        k += 1


def integer_axis(low: float, high: float, *, max_ticks: int = 12) -> dict[str, Any]:
    """Axis settings for a count (trials, layers, items) running from `low` to `high`: ticks at whole multiples of
    `integer_step` only, never between two counts."""
    return {"tickmode": "linear", "tick0": 0, "dtick": integer_step(max(high - low, 1), max_ticks), "tickformat": ",d"}


def write_figure(fig: go.Figure, path: str | Path, *, include_plotlyjs: bool | str = True) -> Path:
    """Write `fig` as an HTML file atomically (plotly.js embedded by default, or "cdn")."""
    return atomic_write_text(path, fig.to_html(include_plotlyjs=include_plotlyjs, full_html=True))


def _num(v: Any) -> float:
    return float("nan") if v is None or v == "" else float(v)


def _with_ci(row: Mapping[str, Any]) -> str:
    """'0.512 [0.401, 0.620]', or just the value when the row has no interval."""
    lo, hi = _num(row.get("ci_low")), _num(row.get("ci_high"))
    value = f"{_num(row['value']):.3f}"
    return value if np.isnan(lo) or np.isnan(hi) else f"{value} [{lo:.3f}, {hi:.3f}]"


def sweep_heatmap(rows: Sequence[Mapping[str, Any]], baseline: Mapping[str, Any], *, title: str = "") -> go.Figure:
    """Heatmap of each cell's `value` over layer (y) x coefficient (x), coloured around the baseline's value.

    The colour scale is diverging and centred on the unsteered baseline (blue above, red below); the
    coefficient-0 column is outlined and the baseline value with its interval is in the title.
    """
    if not rows:
        raise LensSteerError("no sweep rows to plot")
    layers = sorted({int(r["layer"]) for r in rows})
    coeffs = sorted({float(r["coeff"]) for r in rows})
    z = np.full((len(layers), len(coeffs)), np.nan)
    text = [["" for _ in coeffs] for _ in layers]
    for r in rows:
        i, j = layers.index(int(r["layer"])), coeffs.index(float(r["coeff"]))
        z[i, j] = _num(r["value"])
        text[i][j] = f"{_with_ci(r)}<br>|v|={_num(r.get('vector_norm')):.3g}"
    base = _num(baseline["value"])
    finite = z[np.isfinite(z)]
    spread = float(np.max(np.abs(finite - base))) if finite.size else 0.0
    spread = spread if spread > 0 else 1e-6
    metric = str(rows[0].get("metric", "value"))
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=[str(c) for c in coeffs],
            y=[str(layer) for layer in layers],
            text=text,
            hovertemplate="layer %{y}, coeff %{x}<br>" + metric + " %{text}<extra></extra>",
            colorscale="RdBu",
            zmid=base,
            zmin=base - spread,
            zmax=base + spread,
            colorbar={"title": {"text": metric}},
        )
    )
    if 0.0 in coeffs:
        j = coeffs.index(0.0)
        fig.add_shape(
            type="rect",
            x0=j - 0.5,
            x1=j + 0.5,
            y0=-0.5,
            y1=len(layers) - 0.5,
            line={"color": "black", "width": 2, "dash": "dash"},
        )
    head = f"{title} — " if title else ""
    fig.update_layout(
        title=f"{head}{metric} by steered layer and coefficient<br><sup>unsteered baseline {_with_ci(baseline)} "
        "= colour midpoint (blue above, red below); dashed column = coeff 0</sup>",
        xaxis={"title": "coefficient", "type": "category"},
        yaxis={"title": "layer", "type": "category"},
    )
    return fig


def cosine_heatmap(labels: Sequence[Any], matrix: np.ndarray, *, title: str = "", note: str = "") -> go.Figure:
    """Heatmap of a cosine-similarity matrix on a fixed [-1, 1] diverging scale, values printed in the cells."""
    m = np.asarray(matrix, dtype=float)
    if m.shape != (len(labels), len(labels)):
        raise LensSteerError(f"matrix shape {m.shape} does not match {len(labels)} labels")
    names = [str(a) for a in labels]
    fig = go.Figure(
        go.Heatmap(
            z=m,
            x=names,
            y=names,
            zmin=-1,
            zmax=1,
            colorscale="RdBu",
            text=np.round(m, 2),
            texttemplate="%{text}" if len(names) <= 16 else None,
            hovertemplate="%{y} · %{x}: cos %{z:.4f}<extra></extra>",
            colorbar={"title": {"text": "cosine"}},
        )
    )
    fig.update_layout(
        title=title + (f"<br><sup>{note}</sup>" if note else ""),
        yaxis={"autorange": "reversed", "type": "category"},
        xaxis={"type": "category"},
    )
    return fig


def norms_figure(rows: Sequence[Mapping[str, Any]], *, title: str = "Steering-vector norm by layer") -> go.Figure:
    """One line per axis: the direction's norm (y) over layer (x)."""
    if not rows:
        raise LensSteerError("no norm rows to plot")
    fig = go.Figure()
    for i, axis in enumerate(dict.fromkeys(str(r["axis"]) for r in rows)):
        pts = sorted((int(r["layer"]), float(r["norm"])) for r in rows if str(r["axis"]) == axis)
        fig.add_trace(
            go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=axis, **series_style(i))
        )
    layers = [int(r["layer"]) for r in rows]
    fig.update_layout(
        title=title,
        xaxis={"title": "layer", **integer_axis(min(layers), max(layers))},
        yaxis={"title": "L2 norm"},
        showlegend=True,
    )
    return fig


def pca_scatter(labels: Sequence[str], coords: np.ndarray, explained: Sequence[float], *, title: str = "") -> go.Figure:
    """Scatter of the vectors on their first two principal components, each point labelled."""
    c = np.asarray(coords, dtype=float)
    if c.shape != (len(labels), 2):
        raise LensSteerError(f"coords shape {c.shape} does not match {len(labels)} labels x 2 components")
    fig = go.Figure(
        go.Scatter(
            x=c[:, 0], y=c[:, 1], mode="markers+text", text=list(labels), textposition="top center", marker={"size": 10}
        )
    )
    fig.update_layout(
        title=title,
        xaxis={"title": f"PC1 ({100 * explained[0]:.1f}% of variance)", "zeroline": True},
        yaxis={"title": f"PC2 ({100 * explained[1]:.1f}% of variance)", "zeroline": True, "scaleanchor": "x"},
    )
    return fig


def probe_figure(
    rows: Sequence[Mapping[str, Any]], *, title: str = "Held-out probe accuracy by layer", chance: float = 0.5
) -> go.Figure:
    """Accuracy (y) by layer (x), one line per `task`, with a shaded interval band and a chance line.

    Optional `control` rows (same columns, `task` naming the control) are drawn dotted.
    """
    if not rows:
        raise LensSteerError("no probe rows to plot")
    fig = go.Figure()
    for i, task in enumerate(dict.fromkeys(str(r["task"]) for r in rows)):
        pts = sorted(
            (int(r["layer"]), float(r["acc"]), float(r["ci_low"]), float(r["ci_high"]))
            for r in rows
            if str(r["task"]) == task
        )
        x = [p[0] for p in pts]
        style = series_style(i)
        if "control" in task:
            style["line"]["dash"] = "dot"
        fig.add_trace(
            go.Scatter(
                x=x + x[::-1],
                y=[p[3] for p in pts] + [p[2] for p in pts][::-1],
                fill="toself",
                fillcolor=style["line"]["color"],
                opacity=0.2,
                line={"width": 0},
                hoverinfo="skip",
                showlegend=False,
                name=f"{task} 95% CI",
            )
        )
        fig.add_trace(go.Scatter(x=x, y=[p[1] for p in pts], mode="lines+markers", name=task, **style))
    fig.add_hline(y=chance, line={"dash": "dash", "color": "grey"}, annotation_text="chance")
    layers = [int(r["layer"]) for r in rows]
    fig.update_layout(
        title=title,
        xaxis={"title": "layer", **integer_axis(min(layers), max(layers))},
        yaxis={"title": "held-out accuracy", "range": [min(0.0, chance - 0.1), 1.02]},
        showlegend=True,
    )
    return fig
