"""The study's per-axis vectors by the later paper's protocol (`reproduce --protocol v2`,
lens_steer.methods.protocol_v2) instead of the Optuna search: one PCA vector per axis from BBQ-derived "train+prompt"
pairs, its layer chosen at coefficient 1 and then its coefficient, on validation; and the merged-datasets vector from
every axis's pairs together.

Each axis is cached in `v2/<axis>/stage.json`, keyed by the model, the axis, the splits, the budget's limits, the seed,
the scoring and the data; its sweep files (`layers.csv`, `coeffs.csv`, `choice.json`) sit beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lens_steer.methods.isv import Isv
from lens_steer.model.load import HookedModel
from lens_steer.steering.vectors import SteeringVector

Say = Callable[[str], None]
V2_SCALE = "unit"  # the paper's unit vectors


def v2_max_pairs(budget_name: str, num_sents: Sequence[int]) -> int | None:
    """Train pairs per axis: all (the paper's 300) in the paper budget, else the budget's largest pair count."""
    return None if budget_name == "paper" else int(num_sents[1])


def v2_isvs(
    model: HookedModel,
    axes: Sequence[str],
    out: Path,
    *,
    splits: str,
    val_limit: int,
    test_limit: int,
    max_pairs: int | None,
    scoring: str,
    seed: int,
    n_boot: int,
    data_root: str | Path | None,
    say: Say,
) -> tuple[list[Isv], dict[str, Any]]:
    """One v2 vector per axis (cached) as `Isv`s, and the per-axis summaries `results.json` records under `isv`."""
    from lens_steer.methods.protocol_v2 import V2_COEFFS, run_v2_protocol
    from lens_steer.pipeline.stage_cache import cached_stage, data_inputs, model_inputs
    from lens_steer.steering.vectors import load_vector

    isvs: list[Isv] = []
    summary: dict[str, Any] = {}
    parts = ["bbq", "bbq_v2_splits"] if splits == "v2" else ["bbq"]
    for k, axis in enumerate(axes, 1):
        folder = out / "v2" / axis
        inputs = {
            "model": model_inputs(model),
            "axis": axis,
            "splits": splits,
            "val_limit": val_limit,
            "test_limit": test_limit,
            "max_pairs": max_pairs,
            "scoring": scoring,
            "seed": seed,
            "n_boot": n_boot,
            "scale": V2_SCALE,
            "coeffs": list(V2_COEFFS),
            "data": data_inputs(data_root, parts),
        }

        def compute(axis: str = axis, folder: Path = folder) -> dict[str, Any]:
            say(
                f"[{k}/{len(axes)}] v2 protocol: {axis} (every layer at coefficient 1, then {len(V2_COEFFS)} "
                "coefficients)"
            )
            res = run_v2_protocol(
                model,
                axis,
                folder,
                splits=splits,
                scale=V2_SCALE,
                scoring=scoring,
                val_limit=val_limit,
                test_limit=test_limit,
                max_pairs=max_pairs,
                seed=seed,
                n_boot=n_boot,
                data_root=data_root,
            )
            chosen = next(r for r in res.coeff_rows if r["coeff"] == res.coeff)
            return {
                "layer": res.layer,
                "coeff": res.coeff,
                "val_acc": chosen["acc"],
                "val_baseline": res.layer_rows[0]["acc"],
                "n_evaluations": len(res.layer_rows) + len(res.coeff_rows),
            }

        stage = cached_stage(folder / "stage.json", inputs, compute)
        vector = load_vector(folder / "vector.safetensors", model)
        params = {
            "protocol": "v2",
            "layer": stage["layer"],
            "coeff": stage["coeff"],
            "splits": splits,
            "max_pairs": max_pairs,
            "scale": V2_SCALE,
        }
        isvs.append(
            Isv(
                axis,
                vector,
                float(stage["coeff"]),
                path=folder / "vector.safetensors",
                study_name=f"protocol-v2:{axis}",
                params=params,
                value=stage["val_acc"],
            )
        )
        summary[axis] = {
            "study": f"protocol-v2:{axis}",
            "best_value": stage["val_acc"],
            "params": params,
            "coeff": float(stage["coeff"]),
            "n_trials": stage["n_evaluations"],
            "history": [],
            "dir": str(Path("v2") / axis),
            "baseline": {"acc": stage["val_baseline"]},
        }
    return isvs, summary


def v2_merged_vector(
    model: HookedModel, isvs: Sequence[Isv], *, splits: str, max_pairs: int | None, data_root: str | Path | None
) -> SteeringVector:
    """The merged-datasets vector under the v2 protocol: PCA of every axis's pairs together, unit length, at each layer
    an axis chose."""
    import dataclasses

    from lens_steer.extract.activations import pair_activations, vector_from_activations
    from lens_steer.extract.pairs import PairSet, concat
    from lens_steer.methods.protocol_v2 import v2_pairs

    sets = []
    for isv in isvs:
        pairs = v2_pairs(isv.axis, tokenizer=model.tokenizer, splits=splits, data_root=data_root)
        sets.append(pairs if max_pairs is None else PairSet(pairs.pairs[:max_pairs], pairs.provenance))
    layers = sorted({layer for i in isvs for layer in i.vector.layers})
    acts = pair_activations(model, concat(*sets), layers)
    vec = vector_from_activations(acts, "pca_diff", layers, scale=V2_SCALE)
    meta = dataclasses.replace(
        vec.metadata,
        provenance={**vec.metadata.provenance, "ensemble": "merged", "protocol": "v2", "axes": [i.axis for i in isvs]},
    )
    return SteeringVector(dict(vec.directions), meta)


__all__ = ["V2_SCALE", "v2_isvs", "v2_max_pairs", "v2_merged_vector"]
