"""The study's smaller stages, each cached by its inputs (`stage_cache`): the generated out-of-distribution
categories, the layer sweep and the axis x axis geometry."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lens_steer.axes import OOD_CATEGORIES
from lens_steer.model.load import HookedModel
from lens_steer.pipeline.budgets import Budget
from lens_steer.version import __version__

Say = Callable[[str], None]  # a progress line


def ood_stage(out: Path, seed: int, data_root: str | Path | None, say: Say) -> Path:
    """The out-of-distribution BBQ categories generated from the official templates into `out/bbq_generated`
    (kept while its `inputs.json` records the same seed, categories, templates and code version); that folder."""
    from lens_steer.data.bbq_generate import write_generated
    from lens_steer.pipeline.stage_cache import data_inputs, read_stage, write_stage

    generated = out / "bbq_generated"
    key = generated / "inputs.json"
    inputs = {
        "categories": list(OOD_CATEGORIES),
        "seed": seed,
        "data": data_inputs(data_root, ["bbq"]),
        "lens_steer_version": __version__,
    }
    if read_stage(key, inputs) is None or not all(_readable_bbq(generated / f"{c}.jsonl") for c in OOD_CATEGORIES):
        say("generating the out-of-distribution BBQ categories from the official templates")
        key.unlink(missing_ok=True)  # a run killed while generating leaves no key behind mixed files
        paths = write_generated(OOD_CATEGORIES, generated, seed=seed, data_root=data_root)
        write_stage(key, inputs, {"files": sorted(p.name for p in paths.values())})
    return generated


def _readable_bbq(path: Path) -> bool:
    """Whether a generated BBQ file is there and reads whole (a damaged one is generated again)."""
    from lens_steer.data.bbq import load_bbq_file
    from lens_steer.errors import DataError

    try:
        return bool(load_bbq_file(path, source="generated"))
    except DataError:
        return False


def sweep_stage(
    model: HookedModel, axis: str, budget: Budget, scoring: str, out: Path, data_root: str | Path | None, seed: int
) -> dict[str, Any]:
    """A small layer x coefficient sweep of one axis (mean_diff, so coefficients are in the search's units);
    cached in sweep/sweep.json, keyed by the model, the budget's sweep fields, scoring, seed and data."""
    from lens_steer.files import atomic_write_text
    from lens_steer.methods.sweep import sweep_axis
    from lens_steer.pipeline.stage_cache import cached_stage, data_inputs, model_inputs

    n = int(model.cfg.n_layers)
    layers = sorted({min(n - 1, round(layer * n / 30)) for layer in budget.sweep_layers})
    inputs = {
        "model": model_inputs(model),
        "axis": axis,
        "layers": layers,
        "coeffs": list(budget.sweep_coeffs),
        "method": "mean_diff",
        "scoring": scoring,
        "num_sents": budget.geometry_num_sents,
        "limit": budget.sweep_limit,
        "n_boot": budget.n_boot,
        "seed": seed,
        "data": data_inputs(data_root, ["bbq", "prompt_corpora"]),
    }

    def compute() -> dict[str, Any]:
        res = sweep_axis(
            model,
            axis,
            layers,
            list(budget.sweep_coeffs),
            method="mean_diff",
            scoring=scoring,
            num_sents=budget.geometry_num_sents,
            limit=budget.sweep_limit,
            data_root=data_root,
            n_boot=budget.n_boot,
            seed=seed,
        )
        atomic_write_text(out / "sweep" / "sweep.csv", res.to_csv())
        return {
            "axis": axis,
            "layers": res.layers,
            "coeffs": res.coeffs,
            "metric": res.metric,
            "baseline": res.baseline,
            "rows": res.rows,
            "config": res.config,
        }

    return cached_stage(out / "sweep" / "sweep.json", inputs, compute)


def geometry_stage(
    model: HookedModel, axes: Sequence[str], budget: Budget, out: Path, data_root: str | Path | None
) -> dict[str, Any]:
    """Axis x axis cosine similarity of per-axis mean-difference vectors at the layer 2/3 deep; cached in
    geometry/geometry.json, keyed by the model, axes, layer, pair count and prompt corpora."""
    from lens_steer.methods.geometry import axis_cosines, axis_vectors, random_cosine_reference, save_axis_vectors
    from lens_steer.pipeline.stage_cache import cached_stage, data_inputs, model_inputs

    layer = int(model.cfg.n_layers) * 2 // 3
    inputs = {
        "model": model_inputs(model),
        "axes": list(axes),
        "layer": layer,
        "method": "mean_diff",
        "num_sents": budget.geometry_num_sents,
        "persona": 0,
        "template": 0,
        "data": data_inputs(data_root, ["prompt_corpora"]),
    }

    def compute() -> dict[str, Any]:
        vectors = axis_vectors(
            model, list(axes), [layer], method="mean_diff", num_sents=budget.geometry_num_sents, data_root=data_root
        )
        save_axis_vectors(vectors, out / "geometry")
        names, cos = axis_cosines(vectors, layer)
        return {
            "layer": layer,
            "axes": names,
            "cosine": cos.tolist(),
            "random_reference": random_cosine_reference(int(model.cfg.d_model))["mean_abs"],
            "num_sents": budget.geometry_num_sents,
            "method": "mean_diff",
            "persona": 0,
            "template": 0,
        }

    return cached_stage(out / "geometry" / "geometry.json", inputs, compute)
