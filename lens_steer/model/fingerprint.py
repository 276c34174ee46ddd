"""The one fingerprint of a model's weights and identity: what every cache keyed by a model (the prediction store,
the pipeline's stage files, the search's activation cache, the fine-tuning baseline's adapters) records of it."""

from __future__ import annotations

import hashlib
from typing import Any

import torch

from lens_steer.model.load import HookedModel, model_identity


def model_fingerprint(model: HookedModel, samples: int = 64) -> dict[str, Any]:
    """What a model's outputs depend on besides its name: depth, width, weight processing, dtype and a digest
    of `samples` evenly spaced values of every parameter (other weights under the same name differ there)."""
    ident = model_identity(model)
    h = hashlib.sha256()
    dtypes = set()
    for name, p in model.named_parameters():  # type: ignore[attr-defined]
        flat = p.detach().reshape(-1)
        k = min(samples, flat.numel())
        # integer arithmetic: float32 linspace rounds indices past 2**24 (a 49152 x 576 embedding) out of range
        idx = ((torch.arange(k, dtype=torch.long) * (flat.numel() - 1)) // max(k - 1, 1)).to(flat.device)
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        h.update(flat[idx].float().cpu().numpy().tobytes())
        dtypes.add(str(p.dtype).removeprefix("torch."))
    return {
        "n_layers": ident.n_layers,
        "d_model": ident.d_model,
        "processing": dict(ident.processing),
        "dtype": ",".join(sorted(dtypes)),
        "weights": h.hexdigest()[:16],
    }


def model_key(model: HookedModel) -> dict[str, Any]:
    """The model part of a cache key: its name and `model_fingerprint`."""
    return {"model": model_identity(model).name, "fingerprint": model_fingerprint(model)}


__all__ = ["model_fingerprint", "model_key"]
