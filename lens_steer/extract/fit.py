"""Interventions fitted from activations: the additive vector of an aggregator, directional ablation and affine
concept editing along the mean difference, LEACE erasure of the positive/negative label (the `concept-erasure`
package), and the linear probe that gates a gated additive vector.

Each takes `PairActivations` (both sides of contrastive pairs, `{layer: [n, d_model]}`), or labelled activations for
a probe, and returns a value of `lens_steer.steering.interventions`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from lens_steer.errors import LensSteerError
from lens_steer.extract.activations import PairActivations, mean_diff, vector_from_activations
from lens_steer.steering.interventions import (
    Additive,
    AffineEdit,
    DirectionalAblation,
    GatedAdditive,
    LeaceErasure,
)
from lens_steer.steering.vectors import SteeringVector, VectorMetadata


def activation_metadata(acts: PairActivations, method: str) -> VectorMetadata:
    """The metadata of anything fitted from `acts` (model, width, hook, processing, where the pairs came from)."""
    return VectorMetadata(
        model_name=acts.model_name,
        d_model=acts.d_model,
        hook=acts.hook,
        method=method,
        token_position="last",
        processing=dict(acts.processing),
        provenance=dict(acts.provenance),
    )


def _layers(acts: PairActivations, layers: Sequence[int] | None) -> list[int]:
    out = list(acts.layers if layers is None else layers)
    missing = [layer for layer in out if layer not in acts.positive]
    if missing:
        raise LensSteerError(f"layer {missing[0]} was not read; activations cover layers {list(acts.layers)}")
    if not out:
        raise LensSteerError("no layers to fit an intervention at; name at least one")
    return out


def fit_additive(
    acts: PairActivations, coeff: float, method: str = "mean_diff", layers: Sequence[int] | None = None
) -> Additive:
    """`coeff` times the aggregator's vector at `layers`, scaled so coefficient 1 is the mean contrast."""
    return Additive.of(vector_from_activations(acts, method, layers, scale="contrast"), coeff)


def fit_ablation(acts: PairActivations, layers: Sequence[int] | None = None) -> DirectionalAblation:
    """Ablation of the (unit) mean difference positive - negative at each layer."""
    dirs = {layer: mean_diff(acts.positive[layer], acts.negative[layer]) for layer in _layers(acts, layers)}
    return DirectionalAblation(activation_metadata(acts, "ablation"), dirs)


def fit_ace(acts: PairActivations, layers: Sequence[int] | None = None) -> AffineEdit:
    """ACE along the mean difference, the projection set to the positive side's mean (the behaviour wanted)."""
    use = _layers(acts, layers)
    dirs = {layer: mean_diff(acts.positive[layer], acts.negative[layer]) for layer in use}
    ref = {layer: acts.positive[layer].float().mean(0) for layer in use}
    return AffineEdit(activation_metadata(acts, "ace"), dirs, ref)


def fit_leace(acts: PairActivations, layers: Sequence[int] | None = None) -> LeaceErasure:
    """LEACE erasure of the positive/negative label from each layer's activations (both sides pooled)."""
    import warnings

    with warnings.catch_warnings():  # the package's torch.jit.script, deprecated by torch, warns on import
        warnings.simplefilter("ignore", DeprecationWarning)
        from concept_erasure import LeaceFitter

    left, right, bias = {}, {}, {}
    for layer in _layers(acts, layers):
        # float32: a third of float64's time for the eigendecomposition, erased values within 1e-5 of it
        x = torch.cat([acts.positive[layer], acts.negative[layer]]).float()
        z = torch.cat([torch.zeros(len(acts.positive[layer])), torch.ones(len(acts.negative[layer]))]).float()
        eraser = LeaceFitter.fit(x, z[:, None]).eraser
        left[layer] = eraser.proj_left.float()
        right[layer] = eraser.proj_right.float()
        bias[layer] = (eraser.bias if eraser.bias is not None else torch.zeros(x.shape[1])).float()
    return LeaceErasure(activation_metadata(acts, "leace"), left, right, bias)


def fit_probe(
    x: Float[Tensor, "n d_model"], y: Sequence[int], *, l2: float = 1e-2, steps: int = 300, seed: int = 0
) -> tuple[Float[Tensor, " d_model"], float]:
    """A logistic-regression probe (weight, bias) predicting `y` (0/1) from `x`: inputs standardised, L2 on the
    weight, full-batch L-BFGS; the weight and bias returned act on unstandardised `x`."""
    labels = torch.as_tensor(list(y), dtype=torch.float64)
    if labels.numel() != x.shape[0] or not set(labels.tolist()) <= {0.0, 1.0}:
        raise LensSteerError(f"a probe needs one 0/1 label per activation, got {labels.numel()} for {x.shape[0]}")
    if len(set(labels.tolist())) < 2:
        raise LensSteerError("a probe needs both labels among its activations; these have one class only")
    xs = x.double()
    mu, sd = xs.mean(0), xs.std(0).clamp_min(1e-6)
    z = (xs - mu) / sd
    torch.manual_seed(seed)
    w = torch.zeros(z.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, labels) + l2 * (w @ w) / 2
        loss.backward()
        return loss

    opt.step(closure)
    weight = (w.detach() / sd).float()
    bias = float(b.detach() - (w.detach() / sd) @ mu)
    return weight, bias


def fit_gated(
    vector: SteeringVector,
    coeff: float,
    probe_acts: Mapping[int, Float[Tensor, "n d_model"]],
    labels: Sequence[int],
    *,
    seed: int = 0,
) -> GatedAdditive:
    """`coeff * vector` gated at each of its layers by a probe fitted on `probe_acts[layer]` (the same hook's
    activations) to fire where `labels` is 1."""
    weights, biases = {}, {}
    for layer in vector.layers:
        if layer not in probe_acts:
            raise LensSteerError(f"no probe activations at layer {layer}; read them at every steered layer")
        weights[layer], biases[layer] = fit_probe(probe_acts[layer], labels, seed=seed)
    return GatedAdditive(vector.metadata, vector, float(coeff), weights, biases)


__all__ = [
    "activation_metadata",
    "fit_ablation",
    "fit_ace",
    "fit_additive",
    "fit_gated",
    "fit_leace",
    "fit_probe",
]
