"""What lens_steer knows about each supported model family: one table, and lookups into a model's HF config.

The table records, per family, the Hugging Face causal-LM classes it covers, where the decoder layers sit
in the HF module tree, what the family's usual chat template does with a system message, whether its
layers can use sliding-window attention, and whether `residual_cache.run_blocks` runs a forward from a block.
`tests/test_architectures.py` runs every path of lens_steer on a tiny random checkpoint of each family;
README's "Supported model families" lists the table with that matrix's results.

The per-model facts that decide behaviour (which layers slide and by how much, the final logit soft-cap)
are read from the model's own config, never assumed from the family.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from lens_steer.errors import ModelError

FULL_ATTENTION = "full_attention"
SLIDING_ATTENTION = "sliding_attention"


@dataclasses.dataclass(frozen=True)
class Family:
    """Facts about one model family.

    `system_turn` is what the family's usual instruct template does with a system message: "accepted",
    "refused" (the template raises), "dropped" (it renders without it), "none" (no chat template); the
    tokenizer at hand is probed each time (`pairs.system_prompt_mode`), this column only documents.
    `sliding_window`: "never", "config" (when the config sets a window) or "interleaved" (always some
    sliding layers). `decoder_layers`: dotted path of the decoder layer list in the HF causal LM.
    """

    name: str
    architectures: tuple[str, ...]
    model_types: tuple[str, ...]
    decoder_layers: str
    system_turn: str
    sliding_window: str
    examples: tuple[str, ...]
    final_logit_softcap: bool = False

    @property
    def inner_model(self) -> str:
        """Dotted path of the module holding the decoder layers, rotary embedding and final norm."""
        return self.decoder_layers.rsplit(".", 1)[0]


FAMILIES: tuple[Family, ...] = (
    Family(
        "Llama",
        ("LlamaForCausalLM",),
        ("llama",),
        "model.layers",
        "accepted",
        "never",
        ("meta-llama/Llama-3.1-8B-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"),
    ),
    Family(
        "Mistral",
        ("MistralForCausalLM",),
        ("mistral",),
        "model.layers",
        "refused",
        "config",
        ("mistralai/Mistral-7B-Instruct-v0.1",),
    ),
    Family(
        "Qwen2", ("Qwen2ForCausalLM",), ("qwen2",), "model.layers", "accepted", "config", ("Qwen/Qwen2.5-7B-Instruct",)
    ),
    Family("Qwen3", ("Qwen3ForCausalLM",), ("qwen3",), "model.layers", "accepted", "config", ("Qwen/Qwen3-8B",)),
    Family(
        "Gemma 2",
        ("Gemma2ForCausalLM",),
        ("gemma2",),
        "model.layers",
        "refused",
        "interleaved",
        ("google/gemma-2-9b-it",),
        final_logit_softcap=True,
    ),
    Family(
        "Gemma 3",
        ("Gemma3ForCausalLM",),
        ("gemma3_text",),
        "model.layers",
        "accepted",
        "interleaved",
        ("google/gemma-3-270m", "google/gemma-3-1b-it"),
    ),
    Family("GPT-2", ("GPT2LMHeadModel",), ("gpt2",), "transformer.h", "none", "never", ("openai-community/gpt2",)),
    Family(
        "GPT-NeoX (Pythia)",
        ("GPTNeoXForCausalLM",),
        ("gpt_neox",),
        "gpt_neox.layers",
        "none",
        "never",
        ("EleutherAI/pythia-410m",),
    ),
    Family(
        "Phi-3",
        ("Phi3ForCausalLM",),
        ("phi3",),
        "model.layers",
        "dropped",
        "config",
        ("microsoft/Phi-3-mini-4k-instruct",),
    ),
)

_BY_ARCHITECTURE = {arch: f for f in FAMILIES for arch in f.architectures}
_BY_MODEL_TYPE = {mt: f for f in FAMILIES for mt in f.model_types}


def supported_architectures() -> list[str]:
    """The HF causal-LM class names of every supported family."""
    return [arch for f in FAMILIES for arch in f.architectures]


def _supported_list() -> str:
    return ", ".join(f"{f.name} ({'/'.join(f.architectures)})" for f in FAMILIES)


def hf_config(model: Any) -> Any | None:
    """The Hugging Face config behind a hooked model (a TransformerBridge), or None (TL 3.x HookedTransformer)."""
    hf = getattr(model, "original_model", None)
    return getattr(hf, "config", None)


def architecture_name(config_or_arch: Any) -> str:
    """The HF causal-LM class name from a config (its `architectures[0]`), a hooked model, or the name itself."""
    if isinstance(config_or_arch, str):
        return config_or_arch
    config = hf_config(config_or_arch) or config_or_arch
    archs = getattr(config, "architectures", None) or []
    if archs:
        return str(archs[0])
    model_type = getattr(config, "model_type", None)
    fam = _BY_MODEL_TYPE.get(str(model_type))
    if fam is not None:
        return fam.architectures[0]
    raise ModelError(
        f"model config names no architecture (config.architectures is empty, model_type {model_type!r}); set "
        "config.architectures, e.g. ['LlamaForCausalLM']"
    )


def family_of(config_or_arch: Any) -> Family | None:
    """The supported family of a config, hooked model or architecture name, or None when it is not in the table."""
    if (
        not isinstance(config_or_arch, str)
        and hf_config(config_or_arch) is None
        and not hasattr(config_or_arch, "architectures")
    ):
        return None  # a TL 3.x HookedTransformer: no HF config to read
    try:
        name = architecture_name(config_or_arch)
    except ModelError:
        return None
    return _BY_ARCHITECTURE.get(name)


def require_family(config_or_arch: Any, *, model: str = "") -> Family:
    """The family of `config_or_arch`, or a one-line ModelError naming the architecture and the supported ones."""
    fam = family_of(config_or_arch)
    if fam is None:
        label = f"model {model!r} has architecture" if model else "architecture"
        raise ModelError(
            f"{label} {architecture_name(config_or_arch)!r}, which lens_steer does not support; supported families: "
            f"{_supported_list()}"
        )
    return fam


def decoder_layer_module(config_or_arch: Any, layer: int) -> str:
    """Dotted HF module path of decoder layer `layer` (e.g. "model.layers.3", "transformer.h.3",
    "gpt_neox.layers.3")."""
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise ModelError(f"decoder layer must be a non-negative integer, got {layer!r}")
    n = (
        getattr(hf_config(config_or_arch) or config_or_arch, "num_hidden_layers", None)
        if not isinstance(config_or_arch, str)
        else None
    )
    if n is not None and layer >= int(n):
        raise ModelError(f"decoder layer {layer} is out of range: the model has layers 0..{int(n) - 1}")
    return f"{require_family(config_or_arch).decoder_layers}.{layer}"


def layer_attention_types(config: Any) -> list[str]:
    """Per decoder layer: "full_attention" or "sliding_attention", as the HF model builds its masks."""
    n = int(getattr(config, "num_hidden_layers"))
    types = getattr(config, "layer_types", None)
    if types:
        return [str(t) for t in types[:n]]
    window = getattr(config, "sliding_window", None)
    use = getattr(config, "use_sliding_window", True)
    return [SLIDING_ATTENTION if window is not None and use else FULL_ATTENTION] * n


def sliding_window(config: Any) -> int | None:
    """The attention window (tokens) of the model's sliding layers, or None when every layer attends fully."""
    if config is None or SLIDING_ATTENTION not in layer_attention_types(config):
        return None
    window = getattr(config, "sliding_window", None)
    return None if window is None else int(window)


def final_logit_softcap(config: Any) -> float | None:
    """The cap c of the final logits' soft-capping `c * tanh(logits / c)` (Gemma 2), or None."""
    cap = getattr(config, "final_logit_softcapping", None) if config is not None else None
    return None if cap in (None, 0) else float(cap)


def describe_family(model: Any) -> list[str]:
    """Lines for `lens-steer info`: family, architecture, sliding window, soft-cap."""
    config = hf_config(model)
    if config is None:
        return ["family: TransformerLens HookedTransformer (no Hugging Face config)"]
    fam = family_of(config)
    arch = architecture_name(config)
    window = sliding_window(config)
    lines = [f"family: {fam.name if fam else 'not in lens_steer tested families'} ({arch})"]
    if window is not None:
        n_sliding = layer_attention_types(config).count(SLIDING_ATTENTION)
        lines.append(
            f"sliding-window attention: {n_sliding} of {config.num_hidden_layers} layers, window {window} tokens"
        )
    cap = final_logit_softcap(config)
    if cap is not None:
        lines.append(f"final logit soft-cap: {cap:g}")
    return lines


def family_table(rows: Sequence[Family] = FAMILIES) -> list[dict[str, Any]]:
    """The table as JSON-able rows (README, reports)."""
    return [dataclasses.asdict(f) for f in rows]
