"""Layer-wise linear probes: held-out accuracy of an L2-regularised logistic regression, split by group.

Implemented in torch rather than scikit-learn: scikit-learn is not a dependency of lens_steer (torch
already is), and the same code runs on a GPU next to the model's activations. Each probe standardises
its features with the training fold's mean and standard deviation, then minimises the mean binary
cross-entropy plus `l2 / 2 * ||w||^2` with full-batch L-BFGS from zero weights (deterministic).

Folds are drawn over *groups* (by default one group per contrastive pair, so both sides of a pair
land in the same fold; for BBQ, pass each item's variant group so no filled template is seen in
training and testing): every example is predicted once, by the probe trained on the other folds.
Intervals: a percentile bootstrap that resamples whole groups (the honest unit of independence), and
the Wilson score interval over examples beside it (which treats examples as independent).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lens_steer.errors import LensSteerError

_Z95 = 1.959963984540054


@dataclasses.dataclass(frozen=True)
class LogisticProbe:
    """A fitted probe: `sigmoid(((x - mean) / std) @ weight + bias)` is P(label 1)."""

    mean: Tensor
    std: Tensor
    weight: Tensor
    bias: Tensor

    def logits(self, x: Tensor) -> Tensor:
        """Decision values for rows of `x`."""
        z = (x.to(self.mean) - self.mean) / self.std
        return z @ self.weight + self.bias

    def predict(self, x: Tensor) -> Tensor:
        """0/1 predictions for rows of `x`."""
        return (self.logits(x) > 0).long()


@dataclasses.dataclass(frozen=True)
class ProbeScore:
    """Cross-validated accuracy of one probe, with a group-bootstrap and a Wilson 95% interval."""

    acc: float
    ci_low: float
    ci_high: float
    wilson_low: float
    wilson_high: float
    n: int
    n_groups: int
    n_folds: int
    train_acc: float

    def to_dict(self) -> dict[str, float | int]:
        """Plain-number dict of every field."""
        return dataclasses.asdict(self)


def fit_logistic(x: Tensor, y: Tensor, *, l2: float = 1e-2, max_iter: int = 100) -> LogisticProbe:
    """Fit an L2-regularised logistic regression on standardised `x` ([n, d]) and 0/1 `y` ([n])."""
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise LensSteerError(f"probe needs x [n, d] and y [n], got shapes {tuple(x.shape)} and {tuple(y.shape)}")
    if not l2 > 0:
        raise LensSteerError(f"l2 must be positive, got {l2}")
    x = x.double()
    yf = y.to(device=x.device, dtype=torch.float64)
    mean = x.mean(0)
    std = x.std(0, unbiased=False).clamp_min(1e-8)
    z = (x - mean) / std
    w = torch.zeros(z.shape[1], dtype=torch.float64, device=x.device, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, device=x.device, requires_grad=True)
    opt = torch.optim.LBFGS(
        [w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe"
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, yf) + 0.5 * l2 * (w * w).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return LogisticProbe(mean, std, w.detach(), b.detach())


def group_folds(groups: Sequence[Hashable], n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold index of each example: distinct groups shuffled by `seed` and dealt round-robin into folds."""
    uniq = list(dict.fromkeys(groups))
    if n_folds < 2:
        raise LensSteerError(f"n_folds must be at least 2, got {n_folds}")
    if len(uniq) < n_folds:
        raise LensSteerError(f"only {len(uniq)} groups for {n_folds} folds; use more pairs or fewer folds")
    order = np.random.default_rng(seed).permutation(len(uniq))
    fold_of = {uniq[g]: i % n_folds for i, g in enumerate(order)}
    return np.array([fold_of[g] for g in groups])


def wilson_interval(k: int, n: int, z: float = _Z95) -> tuple[float, float]:
    """Wilson score interval for `k` successes out of `n`."""
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def _group_bootstrap(correct: np.ndarray, group_idx: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """Percentile 95% interval of accuracy over resamples of whole groups."""
    n_groups = int(group_idx.max()) + 1
    hits = np.bincount(group_idx, weights=correct.astype(float), minlength=n_groups)
    sizes = np.bincount(group_idx, minlength=n_groups).astype(float)
    acc = float(hits.sum() / sizes.sum())
    if n_boot == 0:
        return acc, acc
    draws = np.random.default_rng(seed).integers(0, n_groups, size=(n_boot, n_groups))
    boot = hits[draws].sum(1) / sizes[draws].sum(1)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return float(lo), float(hi)


def probe_accuracy(
    x: Tensor,
    y: Tensor | Sequence[int],
    groups: Sequence[Hashable] | None = None,
    *,
    n_folds: int = 5,
    l2: float = 1e-2,
    n_boot: int = 1000,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> ProbeScore:
    """Cross-validated accuracy of a logistic probe on `x` ([n, d]) and 0/1 labels `y`, folds split by `groups`."""
    y = torch.as_tensor(y).long().reshape(-1)
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise LensSteerError(
            f"probe needs x [n, d] and one label per row, got {tuple(x.shape)} and {y.shape[0]} labels"
        )
    if not set(y.tolist()) <= {0, 1}:
        raise LensSteerError(f"probe labels must be 0 or 1, got {sorted(set(y.tolist()))}")
    groups = list(range(len(y))) if groups is None else list(groups)
    if len(groups) != len(y):
        raise LensSteerError(f"need one group per example: {len(groups)} groups for {len(y)} examples")
    folds = group_folds(groups, n_folds, seed)
    x = x.to(device) if device is not None else x
    pred = np.full(len(y), -1)
    train_hits = train_n = 0
    for f in range(n_folds):
        test = torch.from_numpy(folds == f)
        train = ~test
        if len(set(y[train].tolist())) < 2:
            raise LensSteerError(
                f"fold {f}: the training folds hold one class only; give both labels in several groups"
            )
        probe = fit_logistic(x[train.to(x.device)], y[train], l2=l2)
        pred[test.numpy()] = probe.predict(x[test.to(x.device)]).cpu().numpy()
        train_hits += int((probe.predict(x[train.to(x.device)]).cpu() == y[train]).sum())
        train_n += int(train.sum())
    correct = pred == y.numpy()
    index_of = {g: i for i, g in enumerate(dict.fromkeys(groups))}
    group_idx = np.array([index_of[g] for g in groups])
    k, n = int(correct.sum()), len(correct)
    lo, hi = _group_bootstrap(correct, group_idx, n_boot, seed)
    wlo, whi = wilson_interval(k, n)
    return ProbeScore(k / n, lo, hi, wlo, whi, n, int(group_idx.max()) + 1, n_folds, train_hits / train_n)


def pair_dataset(positive: Tensor, negative: Tensor) -> tuple[Tensor, Tensor, list[int]]:
    """Stack both sides of `n` pairs: x [2n, d], labels (1 positive, 0 negative), group = pair index."""
    if positive.shape != negative.shape:
        raise LensSteerError(
            f"positive and negative activations differ in shape: {tuple(positive.shape)} vs {tuple(negative.shape)}"
        )
    n = positive.shape[0]
    x = torch.cat([positive, negative])
    y = torch.cat([torch.ones(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)])
    return x, y, list(range(n)) * 2


def probe_layers(
    acts: Any,
    layers: Sequence[int] | None = None,
    *,
    pair_groups: Sequence[Hashable] | None = None,
    n_folds: int = 5,
    l2: float = 1e-2,
    n_boot: int = 1000,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> dict[int, ProbeScore]:
    """Per-layer probe separating the positive from the negative sides of `acts` (a PairActivations).

    `pair_groups` (one per pair, default the pair index) keeps pairs sharing a group in one fold.
    """
    pos: Mapping[int, Tensor] = acts.positive
    neg: Mapping[int, Tensor] = acts.negative
    layers = list(sorted(pos) if layers is None else layers)
    missing = [layer for layer in layers if layer not in pos]
    if missing:
        raise LensSteerError(f"layer {missing[0]} was not read; activations cover layers {sorted(pos)}")
    n_pairs = int(pos[layers[0]].shape[0]) if layers else 0
    if pair_groups is not None and len(pair_groups) != n_pairs:
        raise LensSteerError(f"need one group per pair: {len(pair_groups)} groups for {n_pairs} pairs")
    out: dict[int, ProbeScore] = {}
    for layer in layers:
        x, y, idx = pair_dataset(pos[layer], neg[layer])
        groups = idx if pair_groups is None else [pair_groups[i] for i in idx]
        out[layer] = probe_accuracy(x, y, groups, n_folds=n_folds, l2=l2, n_boot=n_boot, seed=seed, device=device)
    return out
