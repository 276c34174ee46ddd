"""Layer x coefficient sweeps: one extraction pass, then BBQ validation metrics for every (layer, coeff) cell.

Each cell steers a single layer with `coeff * direction`, where the direction is the aggregate of the
cached pair activations at that layer scaled as the search's vectors are (DEFAULT_SCALE, "contrast": its norm
is that of the mean positive-negative difference there), so coefficient 1 is the average contrast whatever the
method, and a sweep's coefficients mean what the search's and the ensembles' do; each row records the direction's
norm (`vector_norm`) and the added vector's (`added_norm`). The unsteered baseline (coeff 0) is evaluated once;
cells with coeff 0 reuse it, since steering with a zero vector is the baseline.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lens_steer.axes import get_axis
from lens_steer.data.bbq import BbqItem
from lens_steer.data.select import select
from lens_steer.errors import LensSteerError
from lens_steer.extract.activations import (
    DEFAULT_SCALE,
    PairActivations,
    get_aggregator,
    pair_activations,
    vector_from_activations,
)
from lens_steer.extract.pairs import PairSet, axis_persona_pairs
from lens_steer.forward.questions import DEFAULT_SCORING
from lens_steer.forward.residual_cache import ResidualCache
from lens_steer.model.load import HookedModel, check_layers
from lens_steer.progress import Progress
from lens_steer.steering.vectors import SteeringVector
from lens_steer.tasks.bbq import run_bbq
from lens_steer.tasks.metrics import BBQ_METRIC_NAMES
from lens_steer.tasks.result import BenchResult

# Columns of a sweep table, in order; `<metric>_ci_low/high` for the chosen metric and for acc.
ROW_METRICS: tuple[str, ...] = (
    "acc",
    "acc_ambig",
    "acc_disambig",
    "unknown_rate_ambig",
    "unknown_rate_disambig",
    "bias_ambig",
    "bias_disambig",
    "unknown_margin_ambig",
    "stereotype_margin_ambig",
)


@dataclasses.dataclass(frozen=True)
class SweepResult:
    """A finished sweep: the baseline row, one row per (layer, coeff) cell, and the configuration."""

    metric: str
    baseline: dict[str, Any]
    rows: list[dict[str, Any]]
    config: dict[str, Any]

    @property
    def layers(self) -> list[int]:
        """Swept layers, ascending."""
        return sorted({int(r["layer"]) for r in self.rows})

    @property
    def coeffs(self) -> list[float]:
        """Swept coefficients, ascending."""
        return sorted({float(r["coeff"]) for r in self.rows})

    def table(self) -> list[dict[str, Any]]:
        """The baseline row followed by every cell row (the rows of sweep.csv)."""
        return [self.baseline, *self.rows]

    def to_csv(self) -> str:
        """The table as CSV text."""
        return rows_to_csv(self.table())


def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """CSV text with the union of the rows' keys as header (first-seen order); missing values blank."""
    fields: list[str] = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in fields})
    return buf.getvalue()


def result_row(result: BenchResult, metric: str) -> dict[str, Any]:
    """The metric columns of one BBQ run: `metric` value with interval, then ROW_METRICS (acc with interval)."""
    overall = result.metrics["overall"]
    row: dict[str, Any] = {
        "metric": metric,
        "value": overall[metric]["value"],
        "ci_low": overall[metric]["ci_low"],
        "ci_high": overall[metric]["ci_high"],
        "n_items": overall["acc"]["n"],
    }
    for name in ROW_METRICS:
        row[name] = overall[name]["value"]
        if name == "acc":
            row["acc_ci_low"], row["acc_ci_high"] = overall[name]["ci_low"], overall[name]["ci_high"]
    return row


def run_sweep(
    model: HookedModel,
    acts: PairActivations,
    items: Sequence[BbqItem],
    layers: Sequence[int],
    coeffs: Sequence[float],
    *,
    method: str = "pca_diff",
    metric: str = "acc",
    scoring: str = DEFAULT_SCORING,
    prompt_format: str = "reference",
    n_boot: int = 1000,
    seed: int = 0,
    max_batch: int = 16,
    progress: Progress | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> SweepResult:
    """Evaluate BBQ `items` unsteered once, then steered at each single layer in `layers` with each coeff."""
    if metric not in BBQ_METRIC_NAMES:
        raise LensSteerError(f"unknown sweep metric {metric!r}; choose one of {', '.join(BBQ_METRIC_NAMES)}")
    get_aggregator(method)
    layers = sorted(set(layers))
    check_layers(model, layers)
    if not coeffs:
        raise LensSteerError("empty coefficient grid; give at least one coefficient, e.g. '-2:2:0.5'")
    if not items:
        raise LensSteerError("no BBQ items to evaluate the sweep on")
    coeffs = sorted(set(float(c) for c in coeffs))

    starts = [x for x in layers if x >= 1]
    residual_cache = (
        ResidualCache(starts) if starts else None
    )  # the coefficients of one layer share its stored residuals

    def evaluate(vector: SteeringVector | None, coeff: float) -> BenchResult:
        return run_bbq(
            model,
            items,
            scoring=scoring,
            prompt_format=prompt_format,
            vector=vector,
            coeff=coeff,
            n_boot=n_boot,
            seed=seed,
            max_batch=max_batch,
            progress=progress,
            residual_cache=residual_cache,
        )

    base = result_row(evaluate(None, 0.0), metric)
    baseline = {"kind": "baseline", "layer": None, "coeff": 0.0, "vector_norm": None, "added_norm": 0.0, **base}
    if on_row is not None:
        on_row(baseline)
    rows: list[dict[str, Any]] = []
    for layer in layers:
        vector = vector_from_activations(acts, method, [layer], scale=DEFAULT_SCALE)
        norm = vector.norms()[layer]
        for coeff in coeffs:
            values = base if coeff == 0 else result_row(evaluate(vector, coeff), metric)
            row = {
                "kind": "cell",
                "layer": layer,
                "coeff": coeff,
                "vector_norm": norm,
                "added_norm": abs(coeff) * norm,
                **values,
            }
            rows.append(row)
            if on_row is not None:
                on_row(row)
    config = {
        "method": method,
        "scale": DEFAULT_SCALE,
        "metric": metric,
        "scoring": scoring,
        "prompt_format": prompt_format,
        "layers": layers,
        "coeffs": coeffs,
        "n_items": len(items),
        "n_boot": n_boot,
        "seed": seed,
        "hook": acts.hook,
        "model_name": acts.model_name,
        "pairs": dict(acts.provenance),
    }
    return SweepResult(metric, baseline, rows, config)


def sweep_axis(
    model: HookedModel,
    axis: str,
    layers: Sequence[int],
    coeffs: Sequence[float],
    *,
    method: str = "pca_diff",
    metric: str = "acc",
    scoring: str = DEFAULT_SCORING,
    prompt_format: str = "reference",
    num_sents: int = 50,
    persona: int = 0,
    template: int = 0,
    pairs: PairSet | None = None,
    limit: int | None = None,
    split_seed: int = 0,
    data_root: str | Path | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    max_batch: int = 16,
    progress: Progress | None = None,
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> SweepResult:
    """Sweep one axis: its default persona pairs (or `pairs`) read at every layer in one pass, then
    `run_sweep` on the axis's BBQ validation split (at most `limit` items)."""
    ax = get_axis(axis)
    if not coeffs:
        raise LensSteerError("empty coefficient grid; give at least one coefficient, e.g. '-2:2:0.5'")
    check_layers(model, list(layers))
    get_aggregator(method)
    items = select(ax.name, "validation", limit, seed=split_seed, split_seed=split_seed, data_root=data_root)
    if pairs is None:
        pairs = axis_persona_pairs(
            ax.name, model.tokenizer, num_sents=num_sents, persona=persona, template=template, data_root=data_root
        )
    acts = pair_activations(model, pairs, list(layers), max_batch=max_batch, progress=progress)
    result = run_sweep(
        model,
        acts,
        items,
        layers,
        coeffs,
        method=method,
        metric=metric,
        scoring=scoring,
        prompt_format=prompt_format,
        n_boot=n_boot,
        seed=seed,
        max_batch=max_batch,
        progress=progress,
        on_row=on_row,
    )
    config = {
        **result.config,
        "axis": ax.name,
        "bbq_category": ax.bbq_category,
        "split": "validation",
        "split_seed": split_seed,
        "limit": limit,
    }
    return dataclasses.replace(result, config=config)
