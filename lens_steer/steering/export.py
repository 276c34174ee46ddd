"""A steering vector written in the format another tool loads (lm-evaluation-harness's steered model, llama.cpp's
control vectors, plain Hugging Face module names), applied at a coefficient; `lens_steer.steering.formats` reads them
back."""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lens_steer.errors import VectorError
from lens_steer.files import atomic_write_bytes
from lens_steer.steering.formats import (
    EXPORT_FORMATS,
    GGUF_ARCH,
    HF_SITES_KEY,
    METADATA_KEY,
    architecture_of,
    check_vanilla_valid,
    hook_site,
    module_names,
    output_site,
)
from lens_steer.steering.vectors import SteeringVector


def _scaled(vector: SteeringVector, coeff: float) -> dict[int, Tensor]:
    if not isinstance(coeff, (int, float)) or not math.isfinite(coeff):
        raise VectorError(f"steering coefficient must be a finite number, got {coeff!r}")
    return {layer: (v * float(coeff)).contiguous() for layer, v in vector.directions.items()}


def _metadata_json(vector: SteeringVector) -> str:
    return json.dumps(vector.metadata.to_json())


def lm_eval_config(vector: SteeringVector, coeff: float, arch: str) -> dict[str, dict[str, Any]]:
    """The dict lm-eval's `steered` model loads: one 'add' entry per layer keyed by its module name."""
    names = module_names(arch)
    check_vanilla_valid(vector.metadata.processing, names, "the vector")
    _scaled(vector, coeff)  # validates coeff
    out: dict[str, dict[str, Any]] = {}
    for layer, direction in vector.directions.items():
        out[output_site(vector.metadata.hook, layer, names)] = {
            "steering_vector": direction.clone(),
            "steering_coefficient": float(coeff),
            "action": "add",
            "bias": None,
            "head_index": None,
            METADATA_KEY: _metadata_json(vector),
            "lens_steer_hook": vector.hook_names[layer],
        }
    return out


def gguf_layers(hook: str, layers: Sequence[int]) -> dict[int, int]:
    """`{our layer: llama.cpp's N}`: block N's output; hook_resid_pre of block l is block l-1's output."""
    if hook not in ("hook_resid_post", "hook_resid_pre"):
        raise VectorError(
            f"a control-vector GGUF steers block outputs only; {hook} cannot be expressed (use hook_resid_post)"
        )
    shift = 1 if hook == "hook_resid_pre" else 0
    out = {layer: layer - shift for layer in layers}
    bad = [layer for layer, n in out.items() if n < 1]
    if bad:
        raise VectorError(
            f"llama.cpp cannot steer block 0's output or input (direction.0 is invalid); blocks.{bad[0]}.{hook} "
            "cannot be exported to GGUF"
        )
    return out


def gguf_bytes(vector: SteeringVector, coeff: float, arch: str) -> bytes:
    """A control-vector GGUF (repeng's layout) with `coeff * direction` as F32 `direction.N` tensors."""
    import gguf

    names = module_names(arch)
    check_vanilla_valid(vector.metadata.processing, names, "the vector")
    numbering = gguf_layers(vector.metadata.hook, vector.layers)
    scaled = _scaled(vector, coeff)
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "vector.gguf"
        writer = gguf.GGUFWriter(str(target), GGUF_ARCH)
        writer.add_string(f"{GGUF_ARCH}.model_hint", arch)
        writer.add_uint32(f"{GGUF_ARCH}.layer_count", len(scaled))
        writer.add_string("lens_steer.metadata", _metadata_json(vector))
        writer.add_string("lens_steer.coeff", repr(float(coeff)))
        for layer in sorted(scaled):
            writer.add_tensor(f"direction.{numbering[layer]}", scaled[layer].numpy())
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return target.read_bytes()


def hf_sites(vector: SteeringVector, arch: str) -> dict[str, dict[str, Any]]:
    """`{full module name: {"site": "input"|"output", "hook": TL hook name, "layer": l}}` for steer_hf."""
    names = module_names(arch)
    check_vanilla_valid(vector.metadata.processing, names, "the vector")
    out = {}
    for layer in vector.layers:
        module, side = hook_site(vector.metadata.hook, layer, names)
        out[f"{names.base}.{module}"] = {"site": side, "hook": vector.hook_names[layer], "layer": layer}
    return out


def hf_bytes(vector: SteeringVector, coeff: float, arch: str) -> bytes:
    """Safetensors keyed by full module names holding `coeff * direction`; sites and our metadata in the header."""
    from safetensors.torch import save

    sites = hf_sites(vector, arch)
    scaled = _scaled(vector, coeff)
    tensors = {module: scaled[info["layer"]] for module, info in sites.items()}
    meta = {
        METADATA_KEY: _metadata_json(vector),
        HF_SITES_KEY: json.dumps(sites),
        "coeff": repr(float(coeff)),
        "model_type": arch,
    }
    return save(tensors, metadata=meta)


def export_targets(vector: SteeringVector, fmt: str, arch: str) -> dict[str, str]:
    """`{hook point name: where the format puts it}`: lm-eval's module name, GGUF's tensor, hf's module and side."""
    if fmt == "lm-eval":
        names = module_names(arch)
        return {vector.hook_names[layer]: output_site(vector.metadata.hook, layer, names) for layer in vector.layers}
    if fmt == "gguf":
        return {
            vector.hook_names[layer]: f"direction.{n}"
            for layer, n in gguf_layers(vector.metadata.hook, vector.layers).items()
        }
    if fmt == "hf":
        return {info["hook"]: f"{module} ({info['site']})" for module, info in hf_sites(vector, arch).items()}
    raise VectorError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")


def export_vector(vector: SteeringVector, fmt: str, coeff: float, out: str | Path, *, arch: str | None = None) -> Path:
    """Write `vector` (applied at `coeff`) as `fmt` to `out` atomically; all checks come before any write."""
    if fmt not in EXPORT_FORMATS:
        raise VectorError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    arch = architecture_of(vector.metadata.model_name, arch)
    out = Path(out)
    if fmt == "lm-eval":
        if out.suffix not in (".pt", ".pth"):
            raise VectorError(f"lm-eval loads steer files ending in .pt or .pth, not {out.name!r}")
        import io

        buffer = io.BytesIO()
        torch.save(lm_eval_config(vector, coeff, arch), buffer)
        return atomic_write_bytes(out, buffer.getvalue())
    if fmt == "gguf":
        return atomic_write_bytes(out, gguf_bytes(vector, coeff, arch))
    return atomic_write_bytes(out, hf_bytes(vector, coeff, arch))
