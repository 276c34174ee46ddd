"""The consistency predictor (Braun et al. 2025): how well the per-pair differences of a contrastive
dataset point the same way, as the mean cosine of each pair's difference with the mean difference, at a
layer. High consistency predicts that the data's vector will steer; it costs nothing beyond the activations
read for the vector. Also the rank and linear correlations used to check that claim across trials."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from lens_steer.errors import LensSteerError


def difference_consistency(positive: Float[Tensor, "n d_model"], negative: Float[Tensor, "n d_model"]) -> float:
    """Mean over pairs of cos(positive_i - negative_i, mean_j (positive_j - negative_j)); pairs whose
    difference is zero count as 0."""
    if positive.shape != negative.shape or positive.ndim != 2 or positive.shape[0] == 0:
        raise LensSteerError(
            f"consistency needs two [n, d_model] activation tables of one shape (got {tuple(positive.shape)}, "
            f"{tuple(negative.shape)})"
        )
    diffs = positive.double() - negative.double()
    mean = diffs.mean(dim=0)
    mean_norm = float(mean.norm())
    if mean_norm == 0.0:
        return 0.0
    norms = diffs.norm(dim=1)
    cos = torch.where(norms > 0, (diffs @ mean) / (norms.clamp_min(1e-300) * mean_norm), torch.zeros_like(norms))
    return float(cos.mean())


def activation_consistency(acts: Any, layers: Sequence[int] | None = None) -> dict[int, float]:
    """`difference_consistency` at each layer of a PairActivations (default: every layer read)."""
    chosen = list(acts.layers if layers is None else layers)
    missing = [layer for layer in chosen if layer not in acts.positive]
    if missing:
        raise LensSteerError(f"layer {missing[0]} was not read; activations cover layers {list(acts.layers)}")
    return {int(layer): difference_consistency(acts.positive[layer], acts.negative[layer]) for layer in chosen}


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties given their average rank."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    sorted_x = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sorted_x[j + 1] == sorted_x[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    xc, yc = x - x.mean(), y - y.mean()
    den = float(np.sqrt((xc**2).sum() * (yc**2).sum()))
    return None if den == 0.0 else float((xc * yc).sum() / den)


def correlation(x: Sequence[float], y: Sequence[float]) -> dict[str, Any]:
    """{"n", "pearson", "spearman"} of two equal-length sequences (finite pairs only); None where undefined
    (fewer than 3 pairs, or a constant sequence)."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise LensSteerError(f"correlation needs two equal-length sequences (got {a.shape}, {b.shape})")
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep], b[keep]
    if len(a) < 3:
        return {"n": int(len(a)), "pearson": None, "spearman": None}
    return {"n": int(len(a)), "pearson": _pearson(a, b), "spearman": _pearson(_ranks(a), _ranks(b))}


def trials_consistency_correlation(trials: Sequence[Any], attr: str = "consistency") -> dict[str, Any]:
    """Correlation of a per-trial user attribute with the trial's objective over complete Optuna trials."""
    pairs = [
        (t.user_attrs[attr], t.value)
        for t in trials
        if getattr(t, "value", None) is not None and isinstance(t.user_attrs, Mapping) and attr in t.user_attrs
    ]
    return correlation([p[0] for p in pairs], [p[1] for p in pairs])
