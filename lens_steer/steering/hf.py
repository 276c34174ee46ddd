"""Steering a vanilla Hugging Face `transformers` model with plain PyTorch hooks (no TransformerLens)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from lens_steer.errors import VectorError
from lens_steer.steering.formats import check_vanilla_valid, hook_site, module_names
from lens_steer.steering.vectors import SteeringVector, load_vector


def _add_to_output(delta: Tensor) -> Any:
    def hook(module: nn.Module, args: Any, output: Any) -> Any:
        if isinstance(output, tuple):  # attention modules return (output, weights)
            return (output[0] + delta.to(device=output[0].device, dtype=output[0].dtype), *output[1:])
        return output + delta.to(device=output.device, dtype=output.dtype)

    return hook


def _add_to_input(delta: Tensor) -> Any:
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            x = args[0]
            return (x + delta.to(device=x.device, dtype=x.dtype), *args[1:]), kwargs
        x = kwargs["hidden_states"]
        return args, {**kwargs, "hidden_states": x + delta.to(device=x.device, dtype=x.dtype)}

    return hook


def hf_hook_plan(
    hf_model: Any, vector: SteeringVector, coeff: float, *, arch: str | None = None
) -> list[tuple[str, str, Tensor]]:
    """`[(full module name, "input"|"output", coeff * direction)]` for `vector` on `hf_model`, after checking
    that it fits (architecture, width, layers, weight processing)."""
    config = hf_model.config
    names = module_names(arch or str(getattr(config, "model_type", "")))
    check_vanilla_valid(vector.metadata.processing, names, f"vector from {vector.metadata.model_name!r}")
    width = int(getattr(config, "hidden_size"))
    n_layers = int(getattr(config, "num_hidden_layers"))
    if vector.metadata.d_model != width:
        raise VectorError(f"vector width {vector.metadata.d_model} does not match the model's hidden_size {width}")
    if max(vector.layers) >= n_layers:
        raise VectorError(f"vector layer {max(vector.layers)} is outside the model's layers 0..{n_layers - 1}")
    if not isinstance(coeff, (int, float)) or not math.isfinite(coeff):
        raise VectorError(f"steering coefficient must be a finite number, got {coeff!r}")
    plan = []
    for layer, direction in vector.directions.items():
        module, side = hook_site(vector.metadata.hook, layer, names)
        plan.append((f"{names.base}.{module}", side, direction * float(coeff)))
    return plan


@contextmanager
def steer_hf(
    hf_model: Any, vector: SteeringVector | str | Path, coeff: float = 1.0, *, arch: str | None = None
) -> Iterator[list[Any]]:
    """Add `coeff * direction` at every position (prompt and generated) while the block is open.

    `vector`: a SteeringVector or a vector file (any format `load_vector` reads). Each hook point becomes a
    forward hook on the module it names (`hook_resid_post`: the decoder layer's output; `hook_attn_out`,
    `hook_mlp_out`: the attention / MLP module's output) or a forward pre-hook (`hook_resid_pre`: the decoder
    layer's input). Exactly the hooks added are removed on exit, also after an exception.
    """
    if not isinstance(vector, SteeringVector):
        vector = load_vector(vector)
    plan = hf_hook_plan(hf_model, vector, coeff, arch=arch)
    handles: list[Any] = []
    try:
        for name, side, delta in plan:
            try:
                module = hf_model.get_submodule(name)
            except AttributeError:
                raise VectorError(
                    f"the model has no module {name!r}; is it a {arch or hf_model.config.model_type} causal LM?"
                ) from None
            if side == "input":
                handles.append(module.register_forward_pre_hook(_add_to_input(delta), with_kwargs=True))
            else:
                handles.append(module.register_forward_hook(_add_to_output(delta)))
        yield handles
    finally:
        for handle in handles:
            handle.remove()
