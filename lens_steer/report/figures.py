"""The report's plotly figures, from typed results: the forest plot of every gain beside its random control
(the figure the report opens with), per-axis accuracy, the layer sweep, the axis geometry, the search histories."""

from __future__ import annotations

import math
from typing import Any

from lens_steer.pipeline.results import IsvSummary, Results
from lens_steer.pipeline.results_entries import BbqBlock
from lens_steer.report.claims import control_gains, gain, in_distribution, ordered_axes, steered_acc
from lens_steer.report.method_tables import steerability_entries
from lens_steer.report.plots import SERIES_SYMBOLS, integer_axis, series_style
from lens_steer.report.tables import VECTOR_LABELS
from lens_steer.report.verdicts import CHANCE, Interval

FIGURE_TITLES: dict[str, str] = {
    "forest": "Every gain beside its random control",
    "accuracy": "Accuracy per axis",
    "sweep": "Layer sweep",
    "cosine": "Axis geometry",
    "history": "Search histories",
    "steerability": "Histograms of the per-item margin changes",
}
# where each figure stands in the page: after the Markdown section of that key (figures not named here stand alone)
FIGURE_SECTIONS: dict[str, str] = {"forest": "claims", "accuracy": "paper_table", "steerability": "steerability"}
FIGURE_TEXT: dict[str, str] = {
    "forest": "Accuracy change over the unsteered baseline, in points, with its paired 95% interval, for every axis "
    "(and out-of-distribution category) and vector; below each, in grey, its matched random control (same norms, "
    "layers and coefficient; the mean of the control seeds, spanning their intervals). A gain counts only where its "
    "interval lies above 0 and clear of its control's.",
    "accuracy": "Per-axis BBQ test accuracy with 95% bootstrap intervals; pale hatched bars are the matched random "
    "controls (same norms, layers and coefficient; the bar spans the controls' intervals).",
    "sweep": "Validation metric by steered layer and coefficient; colours centred on the unsteered baseline.",
    "cosine": "Cosine similarity of the per-axis steering directions.",
    "history": "Best objective so far in each axis's ISV search (pruned trials carry the previous best).",
    "steerability": "Histogram of each item's change in its correct-answer margin (log p(correct) - max log p(other "
    "answers)) under each method, against the unsteered model; items left of 0 were moved the wrong way. Choose the "
    "target in the menu.",
}
COLOURS: dict[str, str] = {
    "isv": "#1f77b4",
    "sve": "#d62728",
    "sve_norm": "#ff7f0e",
    "sve_weighted": "#9467bd",
    "merged": "#2ca02c",
    "sve_loo": "#8c564b",
    "prompting": "#e377c2",
    "self-debias": "#7f7f7f",
    "self-debias-schick": "#bcbd22",
    "finetune": "#17becf",
}
HATCHES: tuple[str, ...] = ("", "/", "\\", "x", ".", "+", "-", "|")  # bar fills told apart without colour
LEGEND_ABOVE: dict[str, Any] = {
    "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.0, "yanchor": "bottom"}
}


def pooled(intervals: list[Interval]) -> Interval | None:
    """The mean value of several intervals, spanning all of them (None for none)."""
    if not intervals:
        return None
    return Interval(
        sum(x.value for x in intervals) / len(intervals), min(x.lo for x in intervals), max(x.hi for x in intervals)
    )


def forest_rows(results: Results) -> list[tuple[str, str, Interval, Interval | None]]:
    """(target, vector, gain, pooled control gain) for every steered test result: the axes in paper order, then
    the out-of-distribution categories."""
    rows = in_distribution(results)
    blocks: list[tuple[str, BbqBlock]] = [(a, rows[a]) for a in ordered_axes(list(rows))]
    if results.ensemble is not None:
        blocks += [(f"{c} (OOD)", b) for c, b in results.ensemble.ood.items() if isinstance(b, BbqBlock)]
    return [
        (target, name, gain(entry), pooled(control_gains(entry)))
        for target, block in blocks
        for name, entry in block.steered.items()
    ]


def forest_figure(results: Results, go: Any) -> Any | None:
    """Gain and control per (target, vector), one row each, the control just below its gain; None without results."""
    rows = forest_rows(results)
    if not rows:
        return None
    fig = go.Figure()
    labels = [f"{t} · {VECTOR_LABELS.get(v, v)}" for t, v, _, _ in rows]
    ys = list(range(len(rows)))[::-1]  # first row at the top

    def bars(values: list[Interval | None]) -> dict[str, Any]:
        return {
            "x": [None if v is None else 100 * v.value for v in values],
            "error_x": {
                "type": "data",
                "symmetric": False,
                "visible": True,
                "array": [None if v is None else 100 * (v.hi - v.value) for v in values],
                "arrayminus": [None if v is None else 100 * (v.value - v.lo) for v in values],
            },
        }

    for k, name in enumerate(dict.fromkeys(v for _, v, _, _ in rows)):
        idx = [i for i, r in enumerate(rows) if r[1] == name]
        fig.add_trace(
            go.Scatter(
                y=[ys[i] for i in idx],
                mode="markers",
                name=VECTOR_LABELS.get(name, name),
                marker={
                    "color": COLOURS.get(name, "#444"),
                    "size": 9,
                    "symbol": SERIES_SYMBOLS[k % len(SERIES_SYMBOLS)],
                },
                text=[labels[i] for i in idx],
                **bars([rows[i][2] for i in idx]),
            )
        )
    fig.add_trace(
        go.Scatter(
            y=[y - 0.35 for y in ys],
            mode="markers",
            name="matched random control",
            marker={"color": "#999999", "symbol": "circle-open", "size": 7},
            text=[f"{lab} (control)" for lab in labels],
            **bars([r[3] for r in rows]),
        )
    )
    fig.add_vline(x=0, line={"color": "black", "width": 1})
    fig.update_layout(
        xaxis={"title": "gain in accuracy over the baseline (points, paired 95% intervals)", "zeroline": False},
        yaxis={
            "tickmode": "array",
            "tickvals": [y - 0.175 for y in ys],
            "ticktext": labels,
            "range": [-1, len(rows)],
            "automargin": True,
        },
        height=max(320, 150 + 26 * len(rows)),
        margin={"l": 10, "r": 20, "t": 40},
        showlegend=True,
        **LEGEND_ABOVE,
    )
    return fig


def _accuracy_figure(rows: dict[str, BbqBlock], go: Any) -> Any:
    axes = ordered_axes(list(rows))
    fig = go.Figure()

    def add(name: str, values: list[Interval | None], **kw: Any) -> None:
        y = [None if v is None else 100 * v.value for v in values]
        plus = [None if v is None else 100 * (v.hi - v.value) for v in values]
        minus = [None if v is None else 100 * (v.value - v.lo) for v in values]
        fig.add_trace(
            go.Bar(
                name=name,
                x=axes,
                y=y,
                error_y={"type": "data", "array": plus, "arrayminus": minus, "visible": True},
                **kw,
            )
        )

    add("baseline", [Interval.of(rows[a].baseline["acc"]) for a in axes], marker_color="#888888")
    # a control's bar: its vector's colour, pale and hatched, so it reads apart from the vector in grey too
    for name in ("isv", "sve"):
        add(VECTOR_LABELS[name], [steered_acc(rows[a].steered.get(name)) for a in axes], marker_color=COLOURS[name])
        ctrl = []
        for a in axes:
            e = rows[a].steered.get(name)
            ctrl.append(
                pooled([Interval.of(c.vs_base.overall.acc.steered) for c in e.controls]) if e is not None else None
            )
        add(
            f"{VECTOR_LABELS[name]} random control",
            ctrl,
            marker={"color": COLOURS[name], "opacity": 0.4, "pattern": {"shape": "/", "solidity": 0.4}},
        )
    fig.add_hline(y=100 * CHANCE, line={"dash": "dash", "color": "black"}, annotation_text="chance (1/3)")
    fig.update_layout(
        barmode="group",
        yaxis={"title": "BBQ test accuracy % (95% intervals)"},
        xaxis={"title": "axis", "automargin": True},
        margin={"r": 20, "t": 40},
        showlegend=True,
        **LEGEND_ABOVE,
    )
    return fig


def _history_figure(isv: dict[str, IsvSummary], go: Any) -> Any:
    fig = go.Figure()
    for i, axis in enumerate(ordered_axes(list(isv))):
        hist = isv[axis].history
        best: list[float | None] = []
        cur: float | None = None
        for v in hist:
            if v is not None and math.isfinite(v):
                cur = v if cur is None else max(cur, v)
            best.append(cur)
        fig.add_trace(
            go.Scatter(x=list(range(1, len(hist) + 1)), y=best, mode="lines+markers", name=axis, **series_style(i))
        )
    trials = max((len(s.history) for s in isv.values()), default=1)
    fig.update_layout(
        xaxis={"title": "trial", "range": [0.5, trials + 0.5], **integer_axis(1, trials)},
        yaxis={"title": "best validation objective so far"},
        showlegend=True,
        margin={"r": 20, "t": 40},
        **LEGEND_ABOVE,
    )
    return fig


def steerability_figure(results: Results, go: Any) -> Any | None:
    """Histograms of the per-item margin changes, one bar trace per (target, method), a menu choosing the target;
    None without any."""
    entries = steerability_entries(results)
    if not entries:
        return None
    fig = go.Figure()
    targets = list(dict.fromkeys(t for t, _, _ in entries))
    for k, (target, name, st) in enumerate(entries):
        edges, counts = st.histogram["edges"], st.histogram["counts"]
        share = st.wrong_way_share
        fig.add_trace(
            go.Bar(
                x=[(a + b) / 2 for a, b in zip(edges, edges[1:])],
                y=counts,
                width=[b - a for a, b in zip(edges, edges[1:])],
                name=f"{VECTOR_LABELS.get(name, name)} (wrong way {100 * share.value:.0f}%)",
                marker={"color": COLOURS.get(name, "#444"), "pattern": {"shape": HATCHES[k % len(HATCHES)]}},
                opacity=0.6,
                visible=target == targets[0],
            )
        )
    buttons = [
        {
            "label": t,
            "method": "update",
            "args": [{"visible": [e[0] == t for e in entries]}, {"title": f"Per-item margin change: {t}"}],
        }
        for t in targets
    ]
    fig.add_vline(x=0, line={"color": "black", "width": 1})
    fig.update_layout(
        barmode="overlay",
        title=f"Per-item margin change: {targets[0]}",
        xaxis={"title": "change in correct-answer margin (nats)"},
        yaxis={"title": "items", **integer_axis(0, max(max(st.histogram["counts"]) for _, _, st in entries))},
        updatemenus=[
            {"buttons": buttons, "direction": "down", "x": 1.0, "xanchor": "right", "y": 1.0, "yanchor": "bottom"}
        ],
        showlegend=True,
        legend={"orientation": "h", "x": 0, "xanchor": "left", "y": -0.2, "yanchor": "top"},
    )
    return fig


def figures(results: Results) -> dict[str, Any]:
    """The report's plotly figures by id (keys of FIGURE_TITLES); stages that were not run are left out."""
    import plotly.graph_objects as go

    from lens_steer.report.plots import cosine_heatmap, sweep_heatmap

    out: dict[str, Any] = {}
    forest = forest_figure(results, go)
    if forest is not None:
        out["forest"] = forest
    rows = in_distribution(results)
    if rows:
        out["accuracy"] = _accuracy_figure(rows, go)
    sweep = results.sweep
    if sweep is not None and sweep.rows:
        out["sweep"] = sweep_heatmap(sweep.rows, sweep.baseline, title=f"layer sweep ({sweep.axis}, validation)")
    geo = results.geometry
    if geo is not None and geo.axes:
        out["cosine"] = cosine_heatmap(
            geo.axes,
            geo.cosine,
            title="Axis x axis cosine similarity of steering directions",
            note=f"layer {geo.layer}; random directions in this space: mean |cos| ~ {geo.random_reference:.3f}",
        )
    if results.isv and any(s.history for s in results.isv.values()):
        out["history"] = _history_figure(results.isv, go)
    steer = steerability_figure(results, go)
    if steer is not None:
        out["steerability"] = steer
    return out


__all__ = ["FIGURE_TEXT", "FIGURE_TITLES", "figures", "forest_figure", "forest_rows", "pooled", "steerability_figure"]
