"""Drift on ordinary text: the mean KL divergence of the next-token distribution of the unsteered model from the
steered one, over every position of neutral texts (a capability check for a model near chance on MMLU)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import torch
from jaxtyping import Float
from torch import Tensor

from lens_steer.errors import LensSteerError
from lens_steer.forward.engine import Unembed, final_residual
from lens_steer.model.load import HookedModel
from lens_steer.model.tokens import encode_texts, model_device
from lens_steer.steering.hooks import steer
from lens_steer.steering.interventions import Intervention


def next_token_logprobs(
    model: HookedModel, texts: Sequence[str], intervention: Intervention | None = None
) -> list[Float[Tensor, "pos vocab"]]:
    """Per text, the log-softmax of the next-token logits at every position (under `intervention` if given)."""
    if not texts:
        raise LensSteerError("no texts to measure drift on; pass at least one")
    unembed = Unembed(model)
    out = []
    device = model_device(model)
    with torch.inference_mode(), steer(model, intervention) if intervention is not None else nullcontext():
        for ids in encode_texts(model, list(texts)):
            resid = final_residual(model, torch.tensor([ids], device=device), {})
            out.append(torch.log_softmax(unembed.logits(resid[0]), dim=-1).cpu())
    return out


def mean_kl(base: Sequence[Tensor], steered: Sequence[Tensor]) -> float:
    """Mean over all positions of KL(base || steered) of log-probability rows (nats)."""
    total, n = 0.0, 0
    for p, q in zip(base, steered, strict=True):
        total += float((p.exp() * (p - q)).sum())
        n += p.shape[0]
    return total / n


__all__ = ["mean_kl", "next_token_logprobs"]
