"""Steering-vector files of other tools, and where TransformerLens hook points sit in Hugging Face models.

Formats (`detect_format` reads a file's first bytes, not its name):
- `lens_steer`: our safetensors (`SteeringVector.save`), read by `lens_steer.steering.vectors`.
- `lm-eval`: the `.pt` dict lm-evaluation-harness's `steered` model loads (`lm_eval/models/hf_steered.py`):
  `{module name below model.base_model: {"steering_vector", "steering_coefficient", "action", "bias",
  "head_index"}}`; its forward hook adds `coeff * vector` to the module's output (its first element for a
  tuple) at every position.
- `gguf`: a control vector as repeng's `export_gguf` writes and llama.cpp's `--control-vector` reads:
  architecture `controlvector`, one 1-D F32 tensor `direction.N` per layer. llama.cpp adds direction.N to
  the output `l_out` of block N (0-based; `common_control_vector_load_one` stores it at offset
  `n_embd*(N-1)` and `llama_adapter_cvec::apply` reads block il from offset `n_embd*(il-1)`), so N >= 1:
  block 0's output cannot be steered. repeng numbers the same way (`hidden_states[N+1]`).
- `hf`: safetensors keyed by full Hugging Face module names (`model.layers.3`), for `lens_steer.steering.hf.steer_hf`
  or a plain `register_forward_hook`.
- `plain`: `{layer: tensor}` as `.pt` or `.safetensors` (int or digit-string keys), read as each decoder
  layer's output (`hook_resid_post`), the convention of repeng and llama.cpp.

Reading (`detect_format`, `read_vector_file`) lives here, below `lens_steer.steering.vectors`; writing a vector in these
formats is `lens_steer.steering.export`. Exported files embed our metadata (hook, layers, model, processing) so that
importing one gives back exactly the vector that was exported, times its coefficient.
"""

from __future__ import annotations

import dataclasses
import json
import re
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from lens_steer.errors import VectorError
from lens_steer.model.architectures import FAMILIES
from lens_steer.model.load import EMBEDDED_MODEL, GEMMA_MODEL, PROCESSING_FLAGS, TINY_MODEL, HookedModel, model_identity

FORMATS = ("lens_steer", "lm-eval", "gguf", "hf", "plain")
EXPORT_FORMATS = ("lm-eval", "gguf", "hf")
METADATA_KEY = "lens_steer"  # the same key as lens_steer.steering.vectors.METADATA_KEY
HF_SITES_KEY = "lens_steer_hf"
GGUF_ARCH = "controlvector"
Site = Literal["input", "output"]
_BLOCK_HOOK = re.compile(r"^blocks\.(\d+)\.(hook_[a-z_]+)$")
_DIRECTION = re.compile(r"^direction\.(-?\d+)$")


# ---- Hugging Face module names per architecture ------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ModuleNames:
    """Where the residual stream's pieces sit in one Hugging Face architecture.

    `base`: the attribute holding `model.base_model` on the causal LM; the other names are below it.
    `embed`: the module whose output is the residual entering block 0 (None where no single module's is).
    `attn`, `mlp`: the modules of a layer whose outputs are TransformerLens's hook_attn_out and hook_mlp_out.
    `norm`: "rms" or "ln"; TransformerLens weight processing changes the residual stream only for "ln".
    """

    base: str
    layers: str
    embed: str | None
    attn: str
    mlp: str
    norm: Literal["rms", "ln"]


# Per model_type, beside `lens_steer.model.architectures` (which says where the decoder layers are): the module whose
# output is the residual entering block 0, the attention and MLP modules of a layer, and the norm kind.
_SUBMODULES: dict[str, tuple[str | None, str, str, Literal["rms", "ln"]]] = {
    "llama": ("embed_tokens", "self_attn", "mlp", "rms"),
    "mistral": ("embed_tokens", "self_attn", "mlp", "rms"),
    "qwen2": ("embed_tokens", "self_attn", "mlp", "rms"),
    "qwen3": ("embed_tokens", "self_attn", "mlp", "rms"),
    "phi3": ("embed_tokens", "self_attn", "mlp", "rms"),
    # Gemma's embedding module includes the sqrt(d_model) scale; its attention and MLP outputs pass a norm before
    # the residual add, and TransformerLens's hook_attn_out / hook_mlp_out are those norms' outputs
    "gemma2": ("embed_tokens", "post_attention_layernorm", "post_feedforward_layernorm", "rms"),
    "gemma3_text": ("embed_tokens", "post_attention_layernorm", "post_feedforward_layernorm", "rms"),
    "gpt2": (None, "attn", "mlp", "ln"),  # block 0's input is wte + wpe: no single module's output
    "gpt_neox": ("embed_in", "attention", "mlp", "ln"),
}
_KNOWN_MODELS = {TINY_MODEL: "llama", EMBEDDED_MODEL: "llama", GEMMA_MODEL: "gemma3_text"}


def module_names(arch: str) -> ModuleNames:
    """The module names of Hugging Face architecture `arch` (a config's `model_type`)."""
    family = next((f for f in FAMILIES if arch in f.model_types), None)
    if family is None or arch not in _SUBMODULES:
        raise VectorError(f"architecture {arch!r} has no module-name mapping; use one of {', '.join(_SUBMODULES)}")
    base, layers = family.decoder_layers.rsplit(".", 1)
    embed, attn, mlp, norm = _SUBMODULES[arch]
    return ModuleNames(base, layers, embed, attn, mlp, norm)


ARCHITECTURES: dict[str, ModuleNames] = {model_type: module_names(model_type) for model_type in _SUBMODULES}


def architecture_of(model: HookedModel | str, arch: str | None = None) -> str:
    """The Hugging Face `model_type` of a hooked model or a model name (a known name, a local checkpoint
    folder, or a hub id already in the local cache); `arch` overrides."""
    if arch is not None:
        module_names(arch)
        return arch
    if not isinstance(model, str):
        hf_model = getattr(model, "original_model", None)  # TransformerBridge
        if hf_model is not None and getattr(hf_model.config, "model_type", None) in _SUBMODULES:
            return str(hf_model.config.model_type)
        model = str(model.cfg.model_name)
    if model in _KNOWN_MODELS:
        return _KNOWN_MODELS[model]
    config = Path(model) / "config.json"
    model_type = None
    if config.is_file():
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    elif "/" in model:
        try:
            from transformers import AutoConfig

            model_type = AutoConfig.from_pretrained(model, local_files_only=True).model_type
        except (OSError, ValueError):
            model_type = None
    if model_type is None:
        raise VectorError(
            f"cannot tell the architecture of model {model!r}; pass --arch (one of {', '.join(_SUBMODULES)})"
        )
    module_names(str(model_type))
    return str(model_type)


def hook_site(hook: str, layer: int, names: ModuleNames) -> tuple[str, Site]:
    """The module (below `base_model`) and side where `blocks.{layer}.{hook}` is: its input or its output.

    `hook_resid_pre` is block `layer`'s input; `hook_attn_out` the attention module's output (its first
    element); `hook_resid_mid` has no module boundary (TransformerLens's bridge applies it only to the
    MLP's norm input, HookedTransformer to the residual) and is refused."""
    block = f"{names.layers}.{layer}"
    if hook == "hook_resid_post":
        return block, "output"
    if hook == "hook_resid_pre":
        return block, "input"
    if hook == "hook_attn_out":
        return f"{block}.{names.attn}", "output"
    if hook == "hook_mlp_out":
        return f"{block}.{names.mlp}", "output"
    raise VectorError(
        f"hook {hook} has no Hugging Face module boundary; export a vector at hook_resid_post, hook_resid_pre, "
        "hook_attn_out or hook_mlp_out"
    )


def output_site(hook: str, layer: int, names: ModuleNames) -> str:
    """The module whose output equals the hook point (for tools that hook outputs only, like lm-eval):
    block l's input is block l-1's output, or the embedding's for l = 0."""
    module, side = hook_site(hook, layer, names)
    if side == "output":
        return module
    if layer > 0:
        return f"{names.layers}.{layer - 1}"
    if names.embed is None:
        raise VectorError(
            "blocks.0.hook_resid_pre is no single module's output in this architecture; steer a later layer"
        )
    return names.embed


def hook_of_output(module: str, names: ModuleNames, n_layers: int) -> tuple[str, int]:
    """(hook kind, layer) of a module output named by `output_site`; embeddings map to block 0's input."""
    if names.embed is not None and module == names.embed:
        return "hook_resid_pre", 0
    m = re.fullmatch(
        rf"{re.escape(names.layers)}\.(\d+)(?:\.({re.escape(names.attn)}|{re.escape(names.mlp)}))?", module
    )
    if not m or int(m.group(1)) >= n_layers:
        where = f"{names.layers}.0..{n_layers - 1}, their .{names.attn} and .{names.mlp}" + (
            f", {names.embed}" if names.embed else ""
        )
        raise VectorError(f"the model has no module {module!r} that maps to a hook point ({where})")
    kind = {None: "hook_resid_post", names.attn: "hook_attn_out", names.mlp: "hook_mlp_out"}[m.group(2)]
    return kind, int(m.group(1))


def check_vanilla_valid(processing: Mapping[str, bool], names: ModuleNames, what: str) -> None:
    """Refuse a vector read from a residual stream that TransformerLens weight processing changed."""
    if any(processing.values()) and names.norm == "ln":
        raise VectorError(
            f"{what} was extracted with TransformerLens weight processing on a LayerNorm model, whose residual stream "
            "it centres, so it is not valid on the vanilla model; re-extract it with process_weights=False"
        )


# ---- format detection ------------------------------------------------------------------------------
def detect_format(path: str | Path) -> str:
    """One of FORMATS, from the file's content; a one-line error for anything else."""
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(8)
    if head[:4] == b"GGUF":
        return "gguf"
    header = _safetensors_header(path, head)  # first: a safetensors header length can start with byte 0x80 too
    if header is not None:
        meta = header.get("__metadata__") or {}
        if HF_SITES_KEY in meta:
            return "hf"
        return "lens_steer" if METADATA_KEY in meta else "plain"
    if head[:2] == b"PK" or head[:1] == b"\x80":  # torch.save zip archive or legacy pickle
        return "lm-eval" if _is_lm_eval(_torch_load(path)) else "plain"
    raise VectorError(
        f"{path} is not a vector file lens_steer reads (lens_steer or plain safetensors, lm-eval or plain .pt, "
        "control-vector GGUF); give one of those, e.g. from `lens-steer extract`"
    )


def _safetensors_header(path: Path, head: bytes) -> dict[str, Any] | None:
    if len(head) < 8:
        return None
    (n,) = struct.unpack("<Q", head)
    if not 2 <= n <= min(path.stat().st_size - 8, 100_000_000):
        return None
    with path.open("rb") as f:
        f.seek(8)
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return None
    return header if isinstance(header, dict) else None


def load_tensors_file(path: str | Path) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU without torch's warning about a legacy pickle protocol (4 or
    5: a file written by plain `pickle`), so a refusal reads as one line; errors are torch's."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected pickle protocol", category=UserWarning)
        return torch.load(path, map_location="cpu", weights_only=True)


def _torch_load(path: Path) -> Any:
    try:
        return load_tensors_file(path)
    except Exception as e:  # unpickling errors of every kind
        if type(e).__name__ == "UnpicklingError":  # weights_only refused an object: nothing in the file was run
            raise VectorError(
                f"{path} is a pickle holding more than tensors; lens_steer never unpickles code (torch.load "
                "weights_only=True): save plain tensors, e.g. torch.save({layer: tensor}), or convert it to "
                "safetensors"
            ) from None
        raise VectorError(f"{path} is not a readable torch file ({str(e).splitlines()[0][:120]})") from None


def _is_lm_eval(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(v, dict) and "steering_vector" in v for v in obj.values())
    )


# ---- import ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ImportedVector:
    """What a foreign file holds: `{layer: direction}` and the JSON metadata of a SteeringVector."""

    directions: dict[int, Tensor]
    metadata: dict[str, Any]


def read_vector_file(path: str | Path, fmt: str, model: HookedModel | None = None) -> ImportedVector:
    """Read a file of format `fmt` (not `lens_steer`); coefficients are multiplied in, so the vector is
    applied at coefficient 1. Files without our metadata take model name and width from `model`."""
    path = Path(path)
    readers = {"lm-eval": _read_lm_eval, "gguf": _read_gguf, "hf": _read_hf, "plain": _read_plain}
    if fmt not in readers:
        raise VectorError(f"unknown vector format {fmt!r}; use one of {', '.join(readers)}")
    directions, embedded, details = readers[fmt](path, model)
    if not directions:
        raise VectorError(f"{path}: no steering directions in this {fmt} file")
    widths = {int(v.numel()) for v in directions.values()}
    if len(widths) != 1:
        raise VectorError(f"{path}: its directions have different widths {sorted(widths)}")
    width = widths.pop()
    if model is not None:
        ident = model_identity(model)
        if width != ident.d_model:
            raise VectorError(
                f"{path}: directions have width {width} but model {ident.name!r} has d_model {ident.d_model}"
            )
        bad = [layer for layer in directions if layer >= ident.n_layers]
        if bad:
            raise VectorError(
                f"{path}: layer {max(bad)} is outside model {ident.name!r}'s layers 0..{ident.n_layers - 1}"
            )
    meta = dict(embedded) if embedded else _plain_metadata(model, width)
    meta["provenance"] = {
        **dict(meta.get("provenance") or {}),
        "origin": f"imported from {fmt}",
        "file": str(path),
        **details,
    }
    return ImportedVector(directions, meta)


def _plain_metadata(model: HookedModel | None, width: int) -> dict[str, Any]:
    name = model_identity(model).name if model is not None else "unknown"
    # these tools read the vanilla Hugging Face model: no TransformerLens weight processing
    return {
        "model_name": name,
        "d_model": width,
        "hook": "hook_resid_post",
        "method": "imported",
        "processing": {f: False for f in PROCESSING_FLAGS},
    }


def _as_direction(value: Any, where: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise VectorError(f"{where} is a {type(value).__name__}, not a tensor")
    if value.ndim != 1 and not (value.ndim == 2 and 1 in value.shape):
        raise VectorError(f"{where} has shape {tuple(value.shape)}, expected one direction [d_model]")
    return value.detach().to(torch.float32).reshape(-1)


def _embedded(text: str | None, path: Path) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        raise VectorError(f"{path}: its embedded lens_steer metadata is not valid JSON") from None
    return obj if isinstance(obj, dict) else None


def _read_lm_eval(path: Path, model: HookedModel | None) -> tuple[dict[int, Tensor], dict | None, dict]:
    config = _torch_load(path)
    if not _is_lm_eval(config):
        raise VectorError(f"{path} is not an lm-eval steer file ({{hookpoint: {{'steering_vector': ...}}}})")
    embedded = _embedded(next(iter(config.values())).get(METADATA_KEY), path)
    if embedded is None and model is None:
        raise VectorError(
            f"{path}: an lm-eval file names Hugging Face modules; pass the model to map them to hook points"
        )
    names = module_names(architecture_of(model)) if embedded is None and model is not None else None
    n_layers = model_identity(model).n_layers if model is not None else 0
    sites: list[tuple[str, int, Tensor]] = []
    coeffs: dict[str, float] = {}
    for hookpoint, info in config.items():
        where = f"{path}: hookpoint {hookpoint!r}"
        if info.get("action", "add") != "add":
            raise VectorError(
                f"{where} uses action {info.get('action')!r}; only 'add' is a steering vector (clamp sets a projection)"
            )
        if info.get("bias") is not None or info.get("head_index") is not None:
            raise VectorError(f"{where} has a bias or head_index; only whole-activation 'add' entries can be imported")
        coeff = float(info.get("steering_coefficient", 1.0))
        vec = _as_direction(info["steering_vector"], where) * coeff  # as lm-eval computes it
        if names is None:
            m = _BLOCK_HOOK.match(str(info.get("lens_steer_hook", "")))
            if not m:
                raise VectorError(f"{where} lacks the lens_steer_hook name its metadata promises")
            kind, layer = m.group(2), int(m.group(1))
        else:
            try:
                kind, layer = hook_of_output(str(hookpoint), names, n_layers)
            except VectorError as e:
                raise VectorError(f"{path}: {e}") from None
        sites.append((kind, layer, vec))
        coeffs[str(hookpoint)] = coeff
    kinds = {kind for kind, _, _ in sites}
    if kinds == {"hook_resid_pre", "hook_resid_post"}:  # the embeddings with layer outputs: all are block inputs
        if any(kind == "hook_resid_post" and layer == n_layers - 1 for kind, layer, _ in sites):
            raise VectorError(
                f"{path}: steering the embeddings and the last layer's output is not one vector of block inputs"
            )
        sites = [("hook_resid_pre", layer + (kind == "hook_resid_post"), vec) for kind, layer, vec in sites]
        kinds = {"hook_resid_pre"}
    if len(kinds) > 1:
        raise VectorError(
            f"{path}: entries steer different kinds of hook points {sorted(kinds)}; one vector has one kind"
        )
    directions = {layer: vec for _, layer, vec in sites}
    if embedded is None:
        embedded = _plain_metadata(model, int(next(iter(directions.values())).numel()))
        embedded["hook"] = kinds.pop()
    return directions, embedded, {"coefficients": coeffs}


def _read_gguf(path: Path, model: HookedModel | None) -> tuple[dict[int, Tensor], dict | None, dict]:
    import gguf
    import numpy as np

    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, OSError, struct.error) as e:
        raise VectorError(f"{path} is not a readable GGUF file ({str(e).splitlines()[0][:120]})") from None

    def field(name: str) -> Any:
        f = reader.get_field(name)
        return None if f is None else f.contents()

    arch = field("general.architecture")
    if arch != GGUF_ARCH:
        raise VectorError(f"{path} is a GGUF file of architecture {arch!r}, not a control vector ({GGUF_ARCH!r})")
    embedded = _embedded(field("lens_steer.metadata"), path)
    shift = 1 if embedded is not None and embedded.get("hook") == "hook_resid_pre" else 0
    directions: dict[int, Tensor] = {}
    for t in reader.tensors:
        m = _DIRECTION.match(t.name)
        if not m or int(m.group(1)) < 1:
            raise VectorError(f"{path}: tensor {t.name!r} is not direction.N with N >= 1 (llama.cpp's numbering)")
        if t.tensor_type not in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            raise VectorError(f"{path}: tensor {t.name} has type {t.tensor_type.name}; control vectors are F32")
        if len(t.shape) != 1:
            raise VectorError(f"{path}: tensor {t.name} has shape {list(t.shape)}; control vectors are 1-D")
        directions[int(m.group(1)) + shift] = torch.from_numpy(np.array(t.data, dtype=np.float32))
    details = {
        "model_hint": field("controlvector.model_hint"),
        "gguf_layers": sorted(layer - shift for layer in directions),
    }
    return directions, embedded, details


def _read_hf(path: Path, model: HookedModel | None) -> tuple[dict[int, Tensor], dict | None, dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        header = f.metadata() or {}
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    embedded = _embedded(header.get(METADATA_KEY), path)
    sites = json.loads(header[HF_SITES_KEY])
    if embedded is None or not isinstance(sites, dict) or set(sites) != set(tensors):
        raise VectorError(f"{path}: an hf steering file needs its lens_steer metadata and one site per tensor")
    directions = {}
    for name, tensor in tensors.items():
        m = _BLOCK_HOOK.match(str(sites[name].get("hook", "")))
        if not m:
            raise VectorError(f"{path}: tensor {name!r} names no lens_steer hook point")
        directions[int(m.group(1))] = _as_direction(tensor, f"{path}: tensor {name!r}")
    return directions, embedded, {"modules": sorted(tensors)}


def _read_plain(path: Path, model: HookedModel | None) -> tuple[dict[int, Tensor], dict | None, dict]:
    with path.open("rb") as f:
        head = f.read(8)
    if _safetensors_header(path, head) is None and (head[:2] == b"PK" or head[:1] == b"\x80"):
        obj = _torch_load(path)
    else:
        from safetensors.torch import load_file

        obj = load_file(str(path))
    if not isinstance(obj, dict) or not obj:
        raise VectorError(f"{path} holds a {type(obj).__name__}, not a {{layer: tensor}} dict")
    directions: dict[int, Tensor] = {}
    for key, value in obj.items():
        if _BLOCK_HOOK.match(str(key)):
            raise VectorError(
                f"{path}: key {key!r} names a hook point, but the file has no '{METADATA_KEY}' metadata; save vectors "
                "with SteeringVector.save"
            )
        if not (isinstance(key, int) or (isinstance(key, str) and key.isdigit())):
            raise VectorError(f"{path}: key {key!r} is not a layer number; a plain vector file is {{layer: tensor}}")
        directions[int(key)] = _as_direction(value, f"{path}: layer {key!r}")
    meta = _plain_metadata(model, int(next(iter(directions.values())).numel()))
    return directions, meta, {}
