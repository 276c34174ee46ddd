"""A vanilla Hugging Face model and a TransformerLens bridge with the same weights, for parity tests."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import torch

from lens_steer import models
from lens_steer.models import HookedModel
from lens_steer.vectors import SteeringVector, VectorMetadata


def tiny_hf(arch: str = "llama", seed: int = 0) -> Any:
    """A small random causal LM of architecture `arch` ("llama": RMSNorm; "gpt2": LayerNorm) on the tiny tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    tok = models.tiny_tokenizer()
    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        if arch == "llama":
            config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                                 num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=False, architectures=["LlamaForCausalLM"], **ids)
            model = LlamaForCausalLM(config)
        elif arch == "gpt2":
            config = GPT2Config(vocab_size=len(tok), n_embd=64, n_layer=3, n_head=4, n_positions=512, architectures=["GPT2LMHeadModel"], **ids)
            model = GPT2LMHeadModel(config)
        else:
            raise ValueError(arch)
    finally:
        torch.random.set_rng_state(state)
    return model.eval()


def tiny_pair(arch: str = "llama", seed: int = 0, process_weights: bool = False) -> tuple[Any, HookedModel]:
    """(vanilla HF model, bridge over a deep copy of it); the llama bridge is labelled "tiny-llama"."""
    hf = tiny_hf(arch, seed)
    name = models.TINY_MODEL if arch == "llama" else f"tiny-{arch}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = models.wrap_hf_model(copy.deepcopy(hf), models.tiny_tokenizer(), name=name, process_weights=process_weights)
    return hf, bridge


def random_vector(model: HookedModel, layers: list[int], hook: str = "hook_resid_post", scale: float = 1.0, seed: int = 0) -> SteeringVector:
    """Random directions (fixed by `seed`) of norm `scale` at `layers`, labelled for `model`."""
    ident = models.model_identity(model)
    g = torch.Generator().manual_seed(seed)
    dirs = {layer: torch.randn(ident.d_model, generator=g) for layer in layers}
    dirs = {layer: scale * v / v.norm() for layer, v in dirs.items()}
    return SteeringVector(dirs, VectorMetadata(ident.name, ident.d_model, hook=hook, method="random", processing=ident.processing))
