"""A steering vector fitted by gradient on the behaviour itself (BiPO / ReFT-lite): one vector added at
`blocks.{layer}.hook_resid_post` (every position), trained so the cloze evaluator's answer log-likelihoods put each
item's target answer first, the model frozen.

The frozen blocks up to `layer` run once per item without gradients (`packed_cloze.lower_residual`); each step runs
only the blocks above it (`packed_cloze.upper_logliks`), on the same tokens and answer split the evaluator scores."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from lens_steer.errors import LensSteerError
from lens_steer.forward.packed_cloze import batch_targets, collate, lower_residual, pack_questions, upper_logliks
from lens_steer.forward.questions import Question
from lens_steer.model.load import HookedModel, model_identity
from lens_steer.model.tokens import pad_id
from lens_steer.steering.interventions import OptimizedVector
from lens_steer.steering.vectors import SteeringVector, VectorMetadata

Progress = Callable[[int, float], None]  # (steps done, last loss)


@dataclasses.dataclass(frozen=True)
class OptimizeConfig:
    """How the vector is fitted: epochs over the items, Adam's learning rate (in units of the residual's rms per
    coordinate at the layer) and an L2 penalty on the vector (in units of the residual's mean squared norm there), so
    both mean the same at every depth; batch size, seed."""

    epochs: int = 3
    lr: float = 0.05
    l2: float = 1e-3
    batch_size: int = 8
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0 or self.l2 < 0:
            raise LensSteerError(f"optimize config: epochs, batch_size >= 1, lr > 0, l2 >= 0; got {self}")

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return dataclasses.asdict(self)


def decoder_model(model: HookedModel) -> Any:
    """The Hugging Face causal LM inside `model`, with the decoder layout the packed path runs (`.model.layers`)."""
    hf = getattr(model, "original_model", None)
    if hf is None or not hasattr(getattr(hf, "model", None), "layers") or not hasattr(hf, "lm_head"):
        raise LensSteerError(
            "an optimized vector needs a TransformerBridge around a Hugging Face decoder (model.layers, lm_head); "
            "load the model with lens_steer.model.load.load_model"
        )
    return hf


def fit_optimized_vector(
    model: HookedModel,
    items: Sequence[tuple[Question, int]],
    layer: int,
    config: OptimizeConfig = OptimizeConfig(),
    *,
    prompt_format: str = "reference",
    provenance: dict[str, Any] | None = None,
    progress: Progress | None = None,
) -> OptimizedVector:
    """A vector at `blocks.{layer}.hook_resid_post` minimising the cross-entropy of each (question, target answer
    index) over the question's options' summed log-likelihoods, plus `l2 * |v|^2 / mean |resid|^2`."""
    if not items:
        raise LensSteerError("an optimized vector needs training items; pass at least one (question, target)")
    n_layers = int(model.cfg.n_layers)
    if not 0 <= layer < n_layers - 1:
        raise LensSteerError(f"an optimized vector's layer must be in 0..{n_layers - 2} (a block must follow it)")
    hf = decoder_model(model)
    start = layer + 1
    groups = [pack_questions(model, [item], prompt_format) for item in items]
    order = sorted(range(len(groups)), key=lambda i: len(groups[i].ids))  # batches of similar length pad little
    batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    prepared = []
    norms = []
    for b in batches:
        ids, pos, mask = collate([groups[i] for i in b], pad_id(model))
        resid = lower_residual(hf, ids, pos, mask, start)
        real = torch.tensor([len(groups[i].ids) for i in b])
        keep = torch.arange(ids.shape[1])[None, :] < real[:, None]
        norms.append(resid[keep].norm(dim=-1).pow(2).mean())
        prepared.append(([groups[i] for i in b], resid, pos, mask, batch_targets([groups[i] for i in b])))
    scale = float(torch.stack(norms).mean())
    d_model = int(model.cfg.d_model)
    torch.manual_seed(config.seed)
    vec = torch.zeros(d_model, requires_grad=True)
    opt = torch.optim.Adam([vec], lr=config.lr * (scale / d_model) ** 0.5)  # lr in units of a coordinate's rms
    frozen = [p.requires_grad for p in hf.parameters()]
    for p in hf.parameters():
        p.requires_grad_(False)
    rng = np.random.default_rng(config.seed)
    steps, loss_value = 0, float("nan")
    try:
        for _ in range(config.epochs):
            for k in rng.permutation(len(prepared)):
                grp, resid, pos, mask, targets = prepared[k]
                logliks = upper_logliks(hf, resid + vec, pos, mask, grp, start)
                loss = torch.nn.functional.cross_entropy(logliks, targets) + config.l2 * (vec @ vec) / scale
                opt.zero_grad()
                loss.backward()
                opt.step()
                steps, loss_value = steps + 1, float(loss.detach())
                if progress is not None:
                    progress(steps, loss_value)
    finally:
        for p, req in zip(hf.parameters(), frozen):
            p.requires_grad_(req)
    ident = model_identity(model)
    meta = VectorMetadata(
        model_name=ident.name,
        d_model=ident.d_model,
        method="optimized",
        token_position="all",
        processing=dict(ident.processing),
        provenance={
            **(provenance or {}),
            "operation": "optimized",
            "layer": layer,
            "n_items": len(items),
            "config": config.to_json(),
            "final_loss": loss_value,
            "steps": steps,
            "scale": "raw",
        },
    )
    return OptimizedVector(meta, SteeringVector({layer: vec.detach().clone()}, meta), 1.0)


__all__ = ["OptimizeConfig", "decoder_model", "fit_optimized_vector"]
