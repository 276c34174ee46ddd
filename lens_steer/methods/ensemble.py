"""Steering Vector Ensembles (SVE) from per-axis ISVs: the paper's mean of unit ISVs, the norm-matched and
coefficient-weighted variants, leave-one-axis-out ensembles, the merged-datasets baseline and matched random
controls. Their evaluation is the pipeline's test stage (`lens_steer.pipeline.evaluate`).

Entry points: `lens_steer.methods.isv.load_isvs` -> `build_ensembles` (+ `merged_vector`, `loo_ensembles`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lens_steer.errors import StudyError, VectorError
from lens_steer.extract.activations import AGGREGATORS, extract_vector
from lens_steer.extract.pairs import concat
from lens_steer.methods.isv import VECTOR_SCALE, Isv, isv_pairs
from lens_steer.model.load import HookedModel
from lens_steer.steering.vectors import SteeringVector, mean_vectors

ENSEMBLE_KINDS: tuple[str, ...] = ("sve", "sve_norm", "sve_weighted")


# ============================================================================ ISVs and ensembles
def norm_matched_mean(vectors: Sequence[SteeringVector]) -> SteeringVector:
    """Per-layer mean, each layer rescaled to the mean norm of the inputs that have that layer."""
    mean = mean_vectors(vectors)
    dirs = {}
    for layer, v in mean.directions.items():
        norms = [float(x.directions[layer].norm()) for x in vectors if layer in x.directions]
        target = sum(norms) / len(norms)
        n = float(v.norm())
        if n == 0:
            raise VectorError(
                f"the mean at layer {layer} is zero (the inputs cancel); norm matching is undefined there"
            )
        dirs[layer] = v * (target / n)
    meta = dataclasses.replace(
        mean.metadata,
        method="norm_matched_mean",
        provenance={**mean.metadata.provenance, "operation": "norm_matched_mean"},
    )
    return SteeringVector(dirs, meta)


def build_ensembles(isvs: Sequence[Isv], weights: Sequence[float] | None = None) -> dict[str, SteeringVector]:
    """The ensembles of `isvs`:
    - "sve": per-layer mean of the ISV vectors (the paper, not renormalised; the paper averages unit directions, ours
      are contrast-scaled),
    - "sve_norm": that mean rescaled per layer to the inputs' mean norm,
    - "sve_weighted": per-layer mean of `weight_i * vector_i`, weights default to each ISV's own
      coefficient (the mean of the deltas the ISVs apply), so its coefficient 1 reproduces that mean.
    """
    if not isvs:
        raise StudyError("no ISVs to ensemble")
    vecs = [i.vector for i in isvs]
    w = [i.coeff for i in isvs] if weights is None else list(weights)
    if len(w) != len(vecs) or not all(math.isfinite(x) for x in w):
        raise StudyError(f"need one finite weight per ISV ({len(vecs)}), got {w}")
    axes = [i.axis for i in isvs]
    out = {
        "sve": _tag(mean_vectors(vecs), "sve", axes),
        "sve_norm": _tag(norm_matched_mean(vecs), "sve_norm", axes),
        "sve_weighted": _tag(mean_vectors([v * x for v, x in zip(vecs, w)]), "sve_weighted", axes, weights=w),
    }
    return out


def _tag(vec: SteeringVector, name: str, axes: Sequence[str], **extra: Any) -> SteeringVector:
    meta = dataclasses.replace(
        vec.metadata, provenance={**vec.metadata.provenance, "ensemble": name, "axes": list(axes), **extra}
    )
    return SteeringVector(dict(vec.directions), meta)


def loo_ensembles(isvs: Sequence[Isv], kind: str = "sve") -> dict[str, SteeringVector]:
    """`{held-out axis: ensemble of the other ISVs}`."""
    if len(isvs) < 2:
        raise StudyError("leave-one-axis-out ensembles need at least two ISVs")
    return {i.axis: build_ensembles([j for j in isvs if j.axis != i.axis])[kind] for i in isvs}


def merged_vector(
    model: HookedModel,
    isvs: Sequence[Isv],
    *,
    method: str = "pca_diff",
    layers: Sequence[int] | None = None,
    data_root: str | Path | None = None,
    max_batch: int = 16,
) -> SteeringVector:
    """The "merged datasets" baseline: one vector from the concatenation of every ISV's contrastive
    pair set, at `layers` (default: every layer any ISV steers), scaled as the ISVs are (`search.VECTOR_SCALE`)."""
    if method not in AGGREGATORS:
        raise StudyError(f"unknown merged method {method!r}; use one of {', '.join(AGGREGATORS)}")
    pairs = concat(*(isv_pairs(i.vector, model.tokenizer, data_root) for i in isvs))
    use = sorted({x for i in isvs for x in i.vector.layers}) if layers is None else list(layers)
    vec = extract_vector(
        model, pairs, use, method=method, hook=isvs[0].vector.metadata.hook, max_batch=max_batch, scale=VECTOR_SCALE
    )
    return _tag(vec, "merged", [i.axis for i in isvs])


def random_control(vector: SteeringVector, seed: int) -> SteeringVector:
    """A random direction per layer with the same norm as `vector`'s, at the same layers (seeded)."""
    gen = torch.Generator().manual_seed(int(seed))
    dirs = {}
    for layer, v in vector.directions.items():
        r = torch.randn(v.shape[0], generator=gen, dtype=torch.float64)
        dirs[layer] = (r / r.norm() * float(v.norm())).float()
    meta = dataclasses.replace(
        vector.metadata,
        method="random_control",
        provenance={
            "operation": "random_control",
            "seed": int(seed),
            "of": vector.metadata.provenance.get("ensemble", vector.metadata.provenance.get("axis")),
        },
    )
    return SteeringVector(dirs, meta)
