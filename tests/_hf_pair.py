"""A vanilla Hugging Face model and a TransformerLens bridge with the same weights, for parity tests."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch

from lens_steer.model import load as models
from lens_steer.model.load import HookedModel
from lens_steer.steering.vectors import SteeringVector, VectorMetadata


def tiny_hf(arch: str = "llama", seed: int = 0) -> Any:
    """A small random causal LM of architecture `arch` ("llama": RMSNorm; "gpt2": LayerNorm) on the tiny tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    if arch == "llama":  # the model behind load_model("tiny-llama", seed=seed)
        return models.tiny_hf_model(seed)[0].eval()
    if arch != "gpt2":
        raise ValueError(arch)
    tok = models.tiny_tokenizer()
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        config = GPT2Config(
            vocab_size=len(tok),
            n_embd=64,
            n_layer=3,
            n_head=4,
            n_positions=512,
            architectures=["GPT2LMHeadModel"],
            **ids,
        )
        model = GPT2LMHeadModel(config)
    finally:
        torch.random.set_rng_state(state)
    return model.eval()


def tiny_pair(arch: str = "llama", seed: int = 0, process_weights: bool = False) -> tuple[Any, HookedModel]:
    """(vanilla HF model, bridge over a deep copy of it); the llama bridge is labelled "tiny-llama"."""
    hf = tiny_hf(arch, seed)
    name = models.TINY_MODEL if arch == "llama" else f"tiny-{arch}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = models.wrap_hf_model(
            copy.deepcopy(hf), models.tiny_tokenizer(), name=name, process_weights=process_weights
        )
    return hf, bridge


def random_vector(
    model: HookedModel, layers: list[int], hook: str = "hook_resid_post", scale: float = 1.0, seed: int = 0
) -> SteeringVector:
    """Random directions (fixed by `seed`) of norm `scale` at `layers`, labelled for `model`."""
    ident = models.model_identity(model)
    g = torch.Generator().manual_seed(seed)
    dirs = {layer: torch.randn(ident.d_model, generator=g) for layer in layers}
    dirs = {layer: scale * v / v.norm() for layer, v in dirs.items()}
    return SteeringVector(
        dirs, VectorMetadata(ident.name, ident.d_model, hook=hook, method="random", processing=ident.processing)
    )


def hooked_logits(hf: Any, tokens: torch.Tensor, handles: list[Any]) -> torch.Tensor:
    """`hf(tokens).logits` with the forward hooks `handles` in place; the hooks are removed afterwards."""
    try:
        with torch.inference_mode():
            return hf(tokens).logits
    finally:
        for h in handles:
            h.remove()
