"""Tiny random Hugging Face checkpoints of each supported model family, written as a user's model folder.

`write_checkpoint(family, folder)` saves `config.json`, `model.safetensors` and a small byte-level
tokenizer (with the family's special tokens and a chat template shaped like the family's own) so that
`load_model(folder)` loads it exactly as it would a downloaded model. The chat templates are written for
these tests; each keeps the one property that matters here: whether the family's template takes a
system turn (Llama 3, Qwen, Gemma 3 folding it itself), refuses it with an error (Mistral v0.1: "roles
must alternate", Gemma 2: "System role not supported") or silently drops it (early Phi-3 mini).
Sliding windows are set far below the test prompts' lengths so that every path really crosses them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HIDDEN = 64
LAYERS = 4
SLIDING_WINDOW = 6  # tokens; the test prompts are 20-500 tokens long
MAX_POSITIONS = 1024  # BBQ prompts in byte-level tokens run to about 500

_LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
_MISTRAL_V01 = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
    "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)
_CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
_GEMMA2 = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}"
    "{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for m in messages %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "<start_of_turn>{{ role }}\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
_GEMMA3 = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set prefix = messages[0]['content'] + '\n\n' %}"
    "{% set turns = messages[1:] %}{% else %}{% set prefix = '' %}{% set turns = messages %}{% endif %}"
    "{% for m in turns %}{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
    "<start_of_turn>{{ role }}\n{{ (prefix if loop.first else '') + m['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
_PHI3_EARLY = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|user|>\n{{ m['content'] }}<|end|>\n<|assistant|>\n"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] }}<|end|>\n{% endif %}{% endfor %}"
)


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family: its HF architecture, tokenizer specials, chat template and a tiny config."""

    name: str
    architecture: str
    bos: str | None
    eos: str
    pad: str
    extra_specials: tuple[str, ...]
    chat_template: str | None
    add_bos: bool
    config: Callable[[int, dict[str, int | None]], Any]
    system_turn: str  # what the template does with a system message: "accepted", "refused", "dropped", "none"


def _ids(tok_ids: dict[str, int | None]) -> dict[str, int | None]:
    return {"bos_token_id": tok_ids["bos"], "eos_token_id": tok_ids["eos"], "pad_token_id": tok_ids["pad"]}


def _llama(vocab: int, t: dict[str, int | None]) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=False,
        **_ids(t),
    )


def _mistral(vocab: int, t: dict[str, int | None]) -> Any:
    from transformers import MistralConfig

    return MistralConfig(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        sliding_window=SLIDING_WINDOW,
        tie_word_embeddings=False,
        **_ids(t),
    )


def _qwen2(vocab: int, t: dict[str, int | None]) -> Any:
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        use_sliding_window=False,
        tie_word_embeddings=True,
        **_ids(t),
    )


def _qwen3(vocab: int, t: dict[str, int | None]) -> Any:
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=MAX_POSITIONS,
        use_sliding_window=False,
        tie_word_embeddings=True,
        **_ids(t),
    )


def _gemma2(vocab: int, t: dict[str, int | None]) -> Any:
    from transformers import Gemma2Config

    return Gemma2Config(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        query_pre_attn_scalar=16,
        max_position_embeddings=MAX_POSITIONS,
        sliding_window=SLIDING_WINDOW,
        layer_types=["sliding_attention", "full_attention"] * (LAYERS // 2),
        attn_logit_softcapping=50.0,
        final_logit_softcapping=30.0,
        **_ids(t),
    )


def _gemma3(vocab: int, t: dict[str, int | None]) -> Any:
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        query_pre_attn_scalar=16,
        max_position_embeddings=MAX_POSITIONS,
        sliding_window=SLIDING_WINDOW,
        layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
        **_ids(t),
    )


def _gpt2(vocab: int, t: dict[str, int | None]) -> Any:
    from transformers import GPT2Config

    return GPT2Config(vocab_size=vocab, n_embd=HIDDEN, n_layer=LAYERS, n_head=4, n_positions=MAX_POSITIONS, **_ids(t))


def _neox(vocab: int, t: dict[str, int | None]) -> Any:
    from transformers import GPTNeoXConfig

    return GPTNeoXConfig(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        intermediate_size=256,
        rotary_pct=0.25,
        max_position_embeddings=MAX_POSITIONS,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        **_ids(t),
    )


def _phi3(vocab: int, t: dict[str, int | None]) -> Any:
    from transformers import Phi3Config

    return Phi3Config(
        vocab_size=vocab,
        hidden_size=HIDDEN,
        intermediate_size=128,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=MAX_POSITIONS,
        original_max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=False,
        **_ids(t),
    )


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "llama",
            "LlamaForCausalLM",
            "<|begin_of_text|>",
            "<|eot_id|>",
            "<|finetune_right_pad_id|>",
            ("<|start_header_id|>", "<|end_header_id|>"),
            _LLAMA3,
            True,
            _llama,
            "accepted",
        ),
        Family("mistral", "MistralForCausalLM", "<s>", "</s>", "<unk>", (), _MISTRAL_V01, True, _mistral, "refused"),
        Family(
            "qwen2",
            "Qwen2ForCausalLM",
            None,
            "<|im_end|>",
            "<|endoftext|>",
            ("<|im_start|>",),
            _CHATML,
            False,
            _qwen2,
            "accepted",
        ),
        Family(
            "qwen3",
            "Qwen3ForCausalLM",
            None,
            "<|im_end|>",
            "<|endoftext|>",
            ("<|im_start|>",),
            _CHATML,
            False,
            _qwen3,
            "accepted",
        ),
        Family(
            "gemma2",
            "Gemma2ForCausalLM",
            "<bos>",
            "<eos>",
            "<pad>",
            ("<start_of_turn>", "<end_of_turn>"),
            _GEMMA2,
            True,
            _gemma2,
            "refused",
        ),
        Family(
            "gemma3",
            "Gemma3ForCausalLM",
            "<bos>",
            "<eos>",
            "<pad>",
            ("<start_of_turn>", "<end_of_turn>"),
            _GEMMA3,
            True,
            _gemma3,
            "accepted",
        ),
        Family("gpt2", "GPT2LMHeadModel", None, "<|endoftext|>", "<|endoftext|>", (), None, False, _gpt2, "none"),
        Family("neox", "GPTNeoXForCausalLM", None, "<|endoftext|>", "<|padding|>", (), None, False, _neox, "none"),
        Family(
            "phi3",
            "Phi3ForCausalLM",
            "<s>",
            "<|endoftext|>",
            "<|endoftext|>",
            ("<|user|>", "<|assistant|>", "<|end|>"),
            _PHI3_EARLY,
            False,
            _phi3,
            "dropped",
        ),
    )
}


def family_tokenizer(family: Family) -> Any:
    """A byte-level BPE tokenizer without merges (any text encodes), with the family's specials and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = list(dict.fromkeys([s for s in (family.bos, family.eos, family.pad, *family.extra_specials) if s]))
    vocab = {tok: i for i, tok in enumerate(specials + sorted(pre_tokenizers.ByteLevel.alphabet()))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    if family.add_bos and family.bos:
        core.post_processor = processors.TemplateProcessing(
            single=f"{family.bos} $A", pair=f"{family.bos} $A $B", special_tokens=[(family.bos, vocab[family.bos])]
        )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token=family.bos, eos_token=family.eos, pad_token=family.pad
    )
    tok.add_special_tokens({"additional_special_tokens": specials})
    if family.chat_template:
        tok.chat_template = family.chat_template
    return tok


def write_checkpoint(
    family: str | Family, folder: str | Path, *, seed: int = 0, dtype: torch.dtype = torch.float32
) -> Path:
    """Save a tiny random model of `family` with its tokenizer to `folder` (safetensors weights) and return `folder`."""
    from transformers import AutoModelForCausalLM

    fam = FAMILIES[family] if isinstance(family, str) else family
    folder = Path(folder)
    tokenizer = family_tokenizer(fam)
    ids = {
        k: tokenizer.convert_tokens_to_ids(getattr(fam, k)) if getattr(fam, k) else None for k in ("bos", "eos", "pad")
    }
    config = fam.config(len(tokenizer), ids)
    config.architectures = [fam.architecture]
    config.initializer_range = 0.1  # larger than the default 0.02, so that greedy choices are far from ties
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    finally:
        torch.random.set_rng_state(state)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
