"""Steered text generation, and the SVE paper's own evaluation protocol (generate a reply, parse the answer).

`generate`: greedy (or seeded temperature sampling) continuations of token-id prompts, batched with left
padding; TransformerLens 4 bridges run with a Hugging Face KV cache, other models re-feed the sequence.
Steering (`vector`, `coeff`, `positions` "all" | "prompt" | "generated") goes through `lens_steer.steering.hooks`.

`generate_answers`: the paper's protocol. Up to 20 greedy tokens with repetition penalty 1.1 after the
reference chat prompt (tokenised without special tokens), stopping at the model's EOS; the reply is
decoded without special tokens, stripped and lower-cased, and parsed as the paper's code
(`get_prediction_with_vector`) parses it: the first of a, b, c, .. found in the reply's first two
characters; else the first "(a)", "(b)", .. anywhere; else (BBQ) the first option whose text, as written,
occurs in the lower-cased reply. One rule is ours: a reply that matched none of those but contains one of
BBQ's "unknown" phrasings counts as the item's unknown option. Anything else is unparsed (answer -1,
counted as wrong); `parse_counts` says how many answers each rule gave.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor

from lens_steer.data.bbq import LM_EVAL_UNKNOWN_RESPONSES
from lens_steer.errors import LensSteerError
from lens_steer.forward.engine import Unembed, final_residual
from lens_steer.model.load import HookedModel, accepts_kv_cache
from lens_steer.model.tokens import length_batches, model_device, pad_batch, pad_id
from lens_steer.progress import Progress
from lens_steer.steering.hooks import POSITION_MODES, PositionMode, steer
from lens_steer.steering.vectors import SteeringVector

GENERATE_MAX_NEW_TOKENS = 20
REFERENCE_REPETITION_PENALTY = 1.1
PARSE_RULES = ("letter", "bracketed_letter", "option_text", "unknown_phrase", "unparsed")


@dataclasses.dataclass(frozen=True)
class Generation:
    """One continuation: its prompt's and its own token ids (up to and including a stop token), the decoded
    text (special tokens skipped), and, when asked for, each step's next-token logits `[n_new, vocab]`."""

    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    scores: Tensor | None = None


def stop_token_ids(model: HookedModel) -> list[int]:
    """The ids that end a reply: the Hugging Face generation config's EOS (as `generate` uses), else the tokenizer's."""
    hf_model = getattr(model, "original_model", None)
    ids = getattr(getattr(hf_model, "generation_config", None), "eos_token_id", None)
    if ids is None:
        ids = model.tokenizer.eos_token_id
    ids = ids if isinstance(ids, (list, tuple)) else [ids]
    return sorted({int(i) for i in ids if i is not None})


def _check(max_new_tokens: int, repetition_penalty: float, temperature: float, positions: str, max_batch: int) -> None:
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise LensSteerError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    if not repetition_penalty > 0:
        raise LensSteerError(f"repetition penalty must be positive, got {repetition_penalty!r}")
    if not temperature >= 0:
        raise LensSteerError(f"temperature must be 0 (greedy) or positive, got {temperature!r}")
    if positions not in POSITION_MODES:
        raise LensSteerError(f"unknown position mode {positions!r}; use one of {', '.join(POSITION_MODES)}")
    if max_batch < 1:
        raise LensSteerError(f"batch size must be at least 1, got {max_batch}")


def generate(
    model: HookedModel,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int = GENERATE_MAX_NEW_TOKENS,
    vector: SteeringVector | None = None,
    coeff: float = 1.0,
    positions: PositionMode = "all",
    use_cache: bool = True,
    repetition_penalty: float = 1.0,
    temperature: float = 0.0,
    seed: int = 0,
    stop_ids: Sequence[int] | None = None,
    max_batch: int = 8,
    return_scores: bool = False,
    progress: Progress | None = None,
) -> list[Generation]:
    """Continue each prompt (token ids) by up to `max_new_tokens` tokens, steered by `coeff * vector` if given.

    Greedy at `temperature` 0, else sampling from softmax(logits / temperature) with a generator seeded by
    `seed` (no top-k / top-p); `repetition_penalty` as Hugging Face applies it (divide a seen token's
    positive logit, multiply a negative one), over each row's real tokens. Rows stop at `stop_ids` (default
    `stop_token_ids`). Batches group prompts of similar length; the KV cache is used where the model takes one.
    """
    _check(max_new_tokens, repetition_penalty, temperature, positions, max_batch)
    if not prompts or any(len(p) == 0 for p in prompts):
        raise LensSteerError("generate needs at least one prompt, and no empty prompt")
    stop = list(stop_token_ids(model) if stop_ids is None else stop_ids)
    generator = torch.Generator().manual_seed(seed)
    steered = vector is not None and coeff != 0
    out: list[Generation | None] = [None] * len(prompts)
    for batch_idx in length_batches(
        [len(p) for p in prompts], max_batch=max_batch, max_tokens=max_batch * max(len(p) for p in prompts)
    ):
        rows = [list(map(int, prompts[i])) for i in batch_idx]
        ctx = (
            steer(model, [(vector, coeff)], positions=positions)  # type: ignore[list-item]
            if steered
            else nullcontext()
        )
        with ctx, torch.inference_mode():  # a fresh steering context per batch: positions restart at each prompt
            new_ids, scores = _generate_batch(
                model,
                rows,
                max_new_tokens,
                use_cache and accepts_kv_cache(model),
                repetition_penalty,
                temperature,
                generator,
                stop,
                return_scores,
            )
        for r, i in enumerate(batch_idx):
            text = model.tokenizer.decode(new_ids[r], skip_special_tokens=True)
            out[i] = Generation(rows[r], new_ids[r], text, scores[r] if scores is not None else None)
        if progress is not None:
            progress(len(batch_idx))
    return out  # type: ignore[return-value]


def _generate_batch(
    model: HookedModel,
    rows: list[list[int]],
    max_new_tokens: int,
    use_cache: bool,
    penalty: float,
    temperature: float,
    generator: torch.Generator,
    stop: list[int],
    return_scores: bool,
) -> tuple[list[list[int]], list[Tensor] | None]:
    """Generate for one left-padded batch; returns each row's new ids (cut after its stop token) and scores."""
    device = model_device(model)
    unembed = Unembed(model)
    batch = pad_batch(rows, pad_id=pad_id(model), padding_side="left", device=device)
    tokens, mask = batch.tokens, batch.attention_mask
    n = tokens.shape[0]
    bridge = accepts_kv_cache(model)  # a TL 4 bridge: Hugging Face forward kwargs (cache, position ids)
    cache = None
    if use_cache:
        from transformers import DynamicCache

        cache = DynamicCache()
    stop_t = torch.tensor(stop, device=device, dtype=torch.long)
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    seen: Tensor | None = None
    new: list[Tensor] = []
    steps: list[Tensor] = []
    inp = tokens
    for step in range(max_new_tokens):
        kwargs: dict[str, Any] = {}
        if bridge:
            position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
            kwargs = {"attention_mask": mask, "position_ids": position_ids[:, -inp.shape[1] :]}
            if cache is not None:
                kwargs["past_key_values"] = cache
        elif bool((mask == 0).any()):
            kwargs = {"attention_mask": mask}
        logits = unembed.logits(final_residual(model, inp, kwargs)[:, -1])  # the engine's unembedding, last position
        if return_scores:
            steps.append(logits.cpu())
        if seen is None:  # each row's real tokens so far (pads are never seen)
            seen = torch.zeros(n, logits.shape[-1], dtype=torch.bool, device=device)
            for r in range(n):
                seen[r, tokens[r][batch.attention_mask[r].bool()]] = True
        if penalty != 1.0:
            logits = torch.where(seen, torch.where(logits < 0, logits * penalty, logits / penalty), logits)
        if temperature > 0:
            probs = torch.softmax(logits / temperature, dim=-1).cpu()
            nxt = torch.multinomial(probs, 1, generator=generator).reshape(-1).to(device)
        else:
            nxt = logits.argmax(dim=-1)
        nxt = torch.where(finished, torch.full_like(nxt, pad_id(model)), nxt)
        new.append(nxt)
        live = (~finished).nonzero().reshape(-1)
        seen[live, nxt[live]] = True
        finished = finished | torch.isin(nxt, stop_t)
        if bool(finished.all()) or step == max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones(n, 1, dtype=mask.dtype, device=device)], dim=1)
        inp = nxt[:, None] if cache is not None else torch.cat([inp, nxt[:, None]], dim=1)
    ids = torch.stack(new, dim=1).cpu()
    out: list[list[int]] = []
    for r in range(n):
        row = ids[r].tolist()
        cut = next((k + 1 for k, t in enumerate(row) if t in stop), len(row))
        out.append(row[:cut])
    scores = None
    if return_scores:
        stacked = torch.stack(steps, dim=1)
        scores = [stacked[r, : len(out[r])] for r in range(n)]
    return out, scores


# ---- the paper's protocol ---------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ParsedAnswer:
    """The answer read from a reply (-1: unparsed) and the rule that read it (one of PARSE_RULES)."""

    pred: int
    rule: str


def parse_answer(reply: str, options: Sequence[str], *, option_text: bool = True) -> ParsedAnswer:
    """Read the answer from `reply` as the paper's code does (see the module docstring).

    `option_text`: also match option texts and BBQ's unknown phrasings (the paper does for BBQ, not MMLU)."""
    text = reply.strip().lower()
    letters = [chr(ord("a") + i) for i in range(len(options))]
    for i, letter in enumerate(letters):
        if letter in text[:2]:
            return ParsedAnswer(i, "letter")
    for i, letter in enumerate(letters):
        if f"({letter})" in text:
            return ParsedAnswer(i, "bracketed_letter")
    if option_text:
        for i, option in enumerate(options):
            if option in text:  # the option as written against the lower-cased reply, as the paper's code compares
                return ParsedAnswer(i, "option_text")
        unknown = [i for i, option in enumerate(options) if option in LM_EVAL_UNKNOWN_RESPONSES]
        if len(unknown) == 1 and any(phrase.lower() in text for phrase in LM_EVAL_UNKNOWN_RESPONSES):
            return ParsedAnswer(unknown[0], "unknown_phrase")
    return ParsedAnswer(-1, "unparsed")


@dataclasses.dataclass(frozen=True)
class GeneratedAnswer:
    """One question under the generate protocol: prompt, its ids, the reply, its ids, and the parsed answer."""

    prompt: str
    prompt_token_ids: list[int]
    reply: str
    reply_token_ids: list[int]
    pred: int
    rule: str


def generate_answers(
    model: HookedModel,
    prompts: Sequence[str],
    options: Sequence[Sequence[str]],
    *,
    option_text: bool | Sequence[bool] = True,
    max_new_tokens: int = GENERATE_MAX_NEW_TOKENS,
    repetition_penalty: float = REFERENCE_REPETITION_PENALTY,
    max_batch: int = 8,
    progress: Progress | None = None,
) -> list[GeneratedAnswer]:
    """The paper's protocol on rendered prompts: greedy replies (steered by any active `steer` block, at
    every position, as the paper steers), parsed against each question's `options`."""
    if len(prompts) != len(options):
        raise LensSteerError(f"{len(prompts)} prompts but {len(options)} option lists")
    flags = [option_text] * len(prompts) if isinstance(option_text, bool) else list(option_text)
    ids = [list(model.tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]  # as the paper tokenises
    gens = generate(
        model,
        ids,
        max_new_tokens=max_new_tokens,
        repetition_penalty=repetition_penalty,
        max_batch=max_batch,
        progress=progress,
    )
    out = []
    for prompt, opts, flag, gen in zip(prompts, options, flags, gens):
        reply = gen.text.strip()
        parsed = parse_answer(reply, opts, option_text=flag)
        out.append(GeneratedAnswer(prompt, gen.prompt_token_ids, reply, gen.token_ids, parsed.pred, parsed.rule))
    return out


def parse_counts(rules: Sequence[str]) -> dict[str, int]:
    """How many answers each parse rule gave (every rule listed, zeros included)."""
    counts = Counter(rules)
    unknown = set(counts) - set(PARSE_RULES)
    if unknown:
        raise LensSteerError(f"unknown parse rule {sorted(unknown)[0]!r}; rules are {', '.join(PARSE_RULES)}")
    return {rule: int(counts.get(rule, 0)) for rule in PARSE_RULES}
