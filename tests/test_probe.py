"""Tests for lens_steer.methods.probe: separable vs shuffled synthetic data, group folds, Wilson against scipy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lens_steer.errors import LensSteerError
from lens_steer.extract.activations import PairActivations
from lens_steer.methods.probe import (
    fit_logistic,
    group_folds,
    pair_dataset,
    probe_accuracy,
    probe_layers,
    wilson_interval,
)


def separable_pairs(n: int = 60, d: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs sharing a random base point orthogonal to a fixed direction; the sides sit at +-1.5 along it
    (margin 3 against noise 0.1 per coordinate: linearly separable)."""
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(d, generator=g)
    direction /= direction.norm()
    base = torch.randn(n, d, generator=g) * 3
    base -= (base @ direction)[:, None] * direction
    noise = 0.1
    pos = base + 1.5 * direction + noise * torch.randn(n, d, generator=g)
    neg = base - 1.5 * direction + noise * torch.randn(n, d, generator=g)
    return pos, neg


def test_separable_pairs_reach_about_100_percent() -> None:
    pos, neg = separable_pairs()
    x, y, groups = pair_dataset(pos, neg)
    score = probe_accuracy(x, y, groups, n_folds=5, n_boot=200, seed=0)
    assert score.acc >= 0.97 and score.n == 120 and score.n_groups == 60
    assert score.ci_low <= score.acc <= score.ci_high


def test_shuffled_labels_give_about_50_percent() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 32, generator=g)
    y = torch.randint(0, 2, (400,), generator=g)
    score = probe_accuracy(x, y, n_folds=5, n_boot=500, seed=0)
    assert 0.4 <= score.acc <= 0.6
    assert score.ci_low <= 0.5 <= score.ci_high
    # the same features with labels shuffled relative to a separable task also drop to chance
    pos, neg = separable_pairs(n=150, seed=2)
    xs, ys, groups = pair_dataset(pos, neg)
    perm = torch.randperm(len(ys), generator=g)
    shuffled = probe_accuracy(xs, ys[perm], groups, n_folds=5, n_boot=500, seed=0)
    assert 0.38 <= shuffled.acc <= 0.62


def test_fit_logistic_matches_the_gradient_condition() -> None:
    """At the optimum, the gradient of mean BCE + l2/2 |w|^2 in standardised space is ~0 (checked by hand in numpy)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(80, 5, generator=g) * torch.tensor([1.0, 2.0, 3.0, 0.5, 1.0]) + 4
    y = (x[:, 0] + torch.randn(80, generator=g) > 4).long()
    probe = fit_logistic(x, y, l2=0.1)
    xn = x.double().numpy()
    z = (xn - xn.mean(0)) / xn.std(0)
    w, b = probe.weight.numpy(), float(probe.bias)
    p = 1 / (1 + np.exp(-(z @ w + b)))
    grad_w = z.T @ (p - y.numpy()) / len(y) + 0.1 * w
    grad_b = float(np.mean(p - y.numpy()))
    assert np.abs(grad_w).max() < 1e-6 and abs(grad_b) < 1e-6
    assert torch.equal(probe.predict(x), ((torch.from_numpy(z) @ probe.weight + probe.bias) > 0).long())


def test_folds_keep_groups_together_and_are_balanced() -> None:
    groups = [i // 2 for i in range(40)]  # 20 pairs, both sides adjacent
    folds = group_folds(groups, 4, seed=5)
    for gid in range(20):
        assert len({folds[i] for i in range(40) if groups[i] == gid}) == 1
    assert sorted(np.bincount(folds).tolist()) == [10, 10, 10, 10]
    assert np.array_equal(folds, group_folds(groups, 4, seed=5))
    with pytest.raises(LensSteerError, match="groups for 4 folds"):
        group_folds([0, 0, 1, 1], 4)


def test_pair_leakage_is_prevented() -> None:
    """Pairs whose two sides are identical except the label carry no signal across pairs: a pair-split probe is at
    chance, even though memorising pair identity would be easy if the two sides were split across folds."""
    g = torch.Generator().manual_seed(4)
    base = torch.randn(100, 16, generator=g)
    flip = torch.randint(0, 2, (100,), generator=g).bool()
    # the "positive" side is a copy of the base point or its mirror; which one is random per pair
    pos = torch.where(flip[:, None], base, -base) + 0.01 * torch.randn(100, 16, generator=g)
    neg = torch.where(flip[:, None], -base, base) + 0.01 * torch.randn(100, 16, generator=g)
    x, y, groups = pair_dataset(pos, neg)
    assert probe_accuracy(x, y, groups, n_folds=5, n_boot=200).acc < 0.65


def test_wilson_interval_matches_scipy() -> None:
    stats = pytest.importorskip("scipy.stats")
    for k, n in [(0, 10), (7, 10), (55, 100), (100, 100)]:
        ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_probe_layers_on_pair_activations() -> None:
    pos, neg = separable_pairs(n=30, d=8, seed=6)
    g = torch.Generator().manual_seed(7)
    noise_pos, noise_neg = torch.randn(30, 8, generator=g), torch.randn(30, 8, generator=g)
    acts = PairActivations({0: pos, 1: noise_pos}, {0: neg, 1: noise_neg}, "hook_resid_post", "m", 8, {}, {})
    scores = probe_layers(acts, n_folds=3, n_boot=100)
    assert scores[0].acc >= 0.95 and scores[1].acc <= 0.75
    with pytest.raises(LensSteerError, match="one group per pair"):
        probe_layers(acts, pair_groups=[0, 1])
    with pytest.raises(LensSteerError, match="layer 5 was not read"):
        probe_layers(acts, [5])


def test_bad_labels_and_shapes() -> None:
    with pytest.raises(LensSteerError, match="0 or 1"):
        probe_accuracy(torch.zeros(10, 2), [2] * 10)
    with pytest.raises(LensSteerError, match="one label per row"):
        probe_accuracy(torch.zeros(10, 2), [0, 1])
