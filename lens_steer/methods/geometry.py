"""Geometry of axis steering vectors: cosine matrices (axis x axis, layer x layer), norms, a 2-D PCA.

Cosines and the PCA compare *directions*; norms are reported separately (a `mean_diff` vector's length
carries information, a `pca_diff` vector is unit length by construction). For scale: two independent
uniformly random directions in d dimensions have cosine with mean 0, standard deviation 1/sqrt(d) and
mean absolute value sqrt(2 / (pi d)). Residual streams are anisotropic, so that is a floor, not a null
model: activation-derived vectors can share a large common component whatever the axis.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lens_steer.axes import AXIS_NAMES, get_axis
from lens_steer.errors import LensSteerError
from lens_steer.extract.activations import get_aggregator, pair_activations, vector_from_activations
from lens_steer.extract.pairs import axis_persona_pairs
from lens_steer.model.load import HookedModel, check_layers
from lens_steer.progress import Progress
from lens_steer.steering.vectors import SteeringVector, VectorMetadata


def cosine_matrix(vectors: Sequence[Tensor] | Tensor) -> np.ndarray:
    """Pairwise cosine similarities of the rows (float64, symmetric, unit diagonal)."""
    m = torch.stack(list(vectors)) if not isinstance(vectors, Tensor) else vectors
    m = m.double().cpu()
    if m.ndim != 2 or m.shape[0] == 0:
        raise LensSteerError(
            f"cosine_matrix needs a non-empty list of equal-length vectors, got shape {tuple(m.shape)}"
        )
    norms = m.norm(dim=1)
    if bool((norms == 0).any()):
        raise LensSteerError(f"vector {int((norms == 0).nonzero()[0])} is zero; its cosine is undefined")
    unit = m / norms[:, None]
    out = (unit @ unit.T).clamp(-1.0, 1.0).numpy()
    out = (out + out.T) / 2
    np.fill_diagonal(out, 1.0)
    return out


def axis_vectors(
    model: HookedModel,
    axes: Sequence[str] = AXIS_NAMES,
    layers: Sequence[int] | None = None,
    *,
    method: str = "pca_diff",
    num_sents: int = 50,
    persona: int = 0,
    template: int = 0,
    data_root: str | Path | None = None,
    max_batch: int = 16,
    progress: Progress | None = None,
) -> dict[str, SteeringVector]:
    """A vector per axis at every layer in `layers` (default all), each from one extraction pass over its default pairs.

    Axes whose default pairs are identical (nationality and physical_appearance both use `genericqa`)
    get the same vector: the pairs are read once.
    """
    get_aggregator(method)
    names = [get_axis(a).name for a in axes]
    if len(set(names)) != len(names):
        raise LensSteerError(f"axes named twice in {list(axes)}")
    layers = list(range(int(model.cfg.n_layers))) if layers is None else sorted(set(layers))
    check_layers(model, layers)
    out: dict[str, SteeringVector] = {}
    cache: dict[str, SteeringVector] = {}  # axes sharing a default corpus share their pairs: extract once
    for name in names:
        pairs = axis_persona_pairs(
            name, model.tokenizer, num_sents=num_sents, persona=persona, template=template, data_root=data_root
        )
        key = json.dumps(pairs.provenance, sort_keys=True)
        if key not in cache:
            acts = pair_activations(model, pairs, layers, max_batch=max_batch, progress=progress)
            cache[key] = vector_from_activations(acts, method)
        vec = cache[key]
        out[name] = SteeringVector(vec.directions, _with_axis(vec, name))
    return out


def _with_axis(vec: SteeringVector, axis: str) -> VectorMetadata:
    return dataclasses.replace(vec.metadata, provenance={**vec.metadata.provenance, "axis": axis})


def save_axis_vectors(vectors: Mapping[str, SteeringVector], folder: str | Path) -> dict[str, Path]:
    """Write each axis's vector to `folder/<axis>.safetensors` (atomic)."""
    folder = Path(folder)
    return {name: vec.save(folder / f"{name}.safetensors") for name, vec in vectors.items()}


def axis_cosines(vectors: Mapping[str, SteeringVector], layer: int) -> tuple[list[str], np.ndarray]:
    """Axis x axis cosine matrix at `layer`."""
    names = list(vectors)
    for name in names:
        if layer not in vectors[name].directions:
            raise LensSteerError(f"vector {name!r} has no layer {layer}; it has layers {list(vectors[name].layers)}")
    return names, cosine_matrix([vectors[n].directions[layer] for n in names])


def layer_cosines(vector: SteeringVector) -> tuple[list[int], np.ndarray]:
    """Layer x layer cosine matrix of one vector's directions."""
    layers = list(vector.layers)
    return layers, cosine_matrix([vector.directions[layer] for layer in layers])


def norm_rows(vectors: Mapping[str, SteeringVector]) -> list[dict[str, Any]]:
    """One row per (axis, layer): the direction's L2 norm."""
    return [
        {"axis": name, "layer": layer, "norm": norm}
        for name, vec in vectors.items()
        for layer, norm in vec.norms().items()
    ]


def pca_2d(vectors: Sequence[Tensor] | Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of the unit-normalised rows on their first two principal components, and the explained variance
    ratios.

    Rows are normalised to unit length and centred on their mean before the SVD; each component's sign is
    fixed so that its largest-magnitude loading over the rows is positive.
    """
    m = torch.stack(list(vectors)) if not isinstance(vectors, Tensor) else vectors
    m = m.double().cpu()
    if m.ndim != 2 or m.shape[0] < 3:
        raise LensSteerError(f"a 2-D PCA needs at least 3 vectors, got {m.shape[0] if m.ndim else 0}")
    unit = m / m.norm(dim=1, keepdim=True).clamp_min(1e-12)
    centred = unit - unit.mean(0, keepdim=True)
    u, s, _ = torch.linalg.svd(centred, full_matrices=False)
    coords = (u[:, :2] * s[:2]).numpy()
    for j in range(2):
        if coords[np.argmax(np.abs(coords[:, j])), j] < 0:
            coords[:, j] *= -1
    var = (s**2).numpy()
    ratio = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    return coords, ratio


def random_cosine_reference(d_model: int) -> dict[str, float]:
    """Cosine of two independent uniformly random directions in `d_model` dimensions: sd and mean |cos|."""
    return {"d_model": d_model, "sd": 1.0 / math.sqrt(d_model), "mean_abs": math.sqrt(2.0 / (math.pi * d_model))}


def random_direction_cosines(vectors: Mapping[str, SteeringVector], layer: int, *, seed: int = 0) -> dict[str, float]:
    """Cosine of each axis's direction at `layer` with one seeded standard-normal random direction."""
    names, _ = axis_cosines(vectors, layer)
    d = vectors[names[0]].metadata.d_model
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(d, generator=g, dtype=torch.float64)
    return {n: float(cosine_matrix([vectors[n].directions[layer].double(), r])[0, 1]) for n in names}


def matrix_rows(labels: Sequence[Any], matrix: np.ndarray, label_name: str = "name") -> list[dict[str, Any]]:
    """A square matrix as CSV rows: first column the row label, then one column per label."""
    return [
        {label_name: a, **{str(b): float(matrix[i, j]) for j, b in enumerate(labels)}} for i, a in enumerate(labels)
    ]
