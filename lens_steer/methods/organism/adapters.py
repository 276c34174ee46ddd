"""LoRA adapters for the organism's trained blocks (recipe `lora_rank` > 0): rank-r adapters (peft) on every linear
layer of blocks `start..`, put into the Hugging Face model in place so the packed-cloze path runs them unchanged
(`add_adapters`), and folded back into those layers' weights before the checkpoint is saved (`merge_adapters`)."""

from __future__ import annotations

from typing import Any

import torch

from lens_steer.errors import LensSteerError


def block_linear_names(hf_model: Any, start: int) -> list[str]:
    """Full module names of every linear layer inside decoder blocks `start..` (attention and MLP projections)."""
    layers = list(hf_model.model.layers)
    names = []
    for i in range(max(0, start), len(layers)):
        names += [f"model.layers.{i}.{n}" for n, m in layers[i].named_modules() if isinstance(m, torch.nn.Linear)]
    return names


def add_adapters(hf_model: Any, start: int, rank: int) -> list[torch.nn.Parameter]:
    """Put rank-`rank` LoRA adapters (alpha = rank: scaling 1, no dropout) on the linear layers of blocks `start..`
    of `hf_model`, in place; freeze everything else and return the adapters' parameters (A from torch's global
    generator, B zero: the adapted model starts equal to the base)."""
    from peft import LoraConfig, inject_adapter_in_model

    names = block_linear_names(hf_model, start)
    if rank < 1 or not names:
        raise LensSteerError(f"LoRA needs a rank of at least 1 and blocks to adapt (rank {rank}, blocks from {start})")
    config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, target_modules=names, bias="none")
    inject_adapter_in_model(config, hf_model)
    for p in hf_model.parameters():
        p.requires_grad_(False)
    params = [p for n, p in hf_model.named_parameters() if ".lora_A." in n or ".lora_B." in n]
    for p in params:
        p.requires_grad_(True)
    return params


def merge_adapters(hf_model: Any) -> int:
    """Fold every LoRA adapter of `hf_model` into its linear layer's weight and put the plain layer back, in place
    (the model's state dict is the base architecture's again); the number of layers merged."""
    from peft.tuners.lora import LoraLayer

    adapted = [(name, m) for name, m in hf_model.named_modules() if isinstance(m, LoraLayer)]
    for name, module in adapted:
        module.merge()
        parent_name, _, child = name.rpartition(".")
        setattr(hf_model.get_submodule(parent_name), child, module.get_base_layer())
    if adapted:
        vars(hf_model).pop("peft_config", None)  # what peft's injection left on the model
    for p in hf_model.parameters():
        p.requires_grad_(False)
    return len(adapted)
