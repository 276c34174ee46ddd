"""Log-probabilities of continuation tokens after prompts: token ids in, per-token log-probs (or whole
next-token distributions, for methods that rescale them) out. One forward pass per (prompt + continuation)
sequence, length-bucketed and right-padded; only the continuation's positions are unembedded."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from lens_steer.errors import LensSteerError
from lens_steer.forward.engine import final_residual
from lens_steer.model.load import HookedModel
from lens_steer.model.tokens import encode_texts, length_batches, model_device, pad_batch, pad_id
from lens_steer.progress import Progress


def unembed(model: HookedModel, resid: Float[Tensor, "n d_model"]) -> Float[Tensor, "n vocab"]:
    """Final norm and unembedding of selected residual vectors (float32 logits)."""
    x = model.ln_final(resid)  # type: ignore[attr-defined]
    logits = x @ model.W_U  # type: ignore[attr-defined]
    b_U = getattr(model, "b_U", None)
    if b_U is not None:
        logits = logits + b_U
    return logits.float()


def _batched_distributions(
    model: HookedModel,
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    *,
    max_batch: int,
    max_tokens: int,
    progress: Progress | None,
) -> Iterator[tuple[int, Float[Tensor, "n_cont vocab"]]]:
    """(index, log-softmax rows at its continuation's positions) for every sequence, one batch at a time."""
    if len(prompts) != len(continuations):
        raise LensSteerError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    for i, (p, c) in enumerate(zip(prompts, continuations)):
        if not p or not c:
            raise LensSteerError(f"sequence {i}: the prompt and the continuation each need at least one token")
    device = model_device(model)
    rows = [list(p) + list(c) for p, c in zip(prompts, continuations)]
    for batch_idx in length_batches([len(r) for r in rows], max_batch=max_batch, max_tokens=max_tokens):
        batch = pad_batch([rows[i] for i in batch_idx], pad_id=pad_id(model), padding_side="right", device=device)
        with torch.inference_mode():
            resid = final_residual(model, batch.tokens, batch.forward_kwargs())
            which, where = [], []
            for j, i in enumerate(batch_idx):
                start = len(prompts[i]) - 1
                which += [j] * len(continuations[i])
                where += list(range(start, start + len(continuations[i])))
            logp = torch.log_softmax(unembed(model, resid[which, where]), dim=-1).cpu()
        offset = 0
        for i in batch_idx:
            n = len(continuations[i])
            yield i, logp[offset : offset + n]
            offset += n
        if progress is not None:
            progress(len(batch_idx))


def next_token_logprobs(
    model: HookedModel,
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    *,
    max_batch: int = 16,
    max_tokens: int = 2048,
    progress: Progress | None = None,
) -> list[Float[Tensor, "n_cont vocab"]]:
    """For each (prompt, continuation): the log-softmax next-token distribution at each continuation
    token's position (row t predicts continuation token t), on the CPU. Whole vocabulary rows: keep the
    number of scored tokens small (use `continuation_logprobs` for plain log-probabilities)."""
    out: list[Tensor] = [torch.empty(0)] * len(prompts)
    for i, rows in _batched_distributions(
        model, prompts, continuations, max_batch=max_batch, max_tokens=max_tokens, progress=progress
    ):
        out[i] = rows
    return out


def continuation_logprobs(
    model: HookedModel,
    prompts: Sequence[Sequence[int]],
    continuations: Sequence[Sequence[int]],
    *,
    max_batch: int = 16,
    max_tokens: int = 2048,
    progress: Progress | None = None,
) -> list[Float[Tensor, " n_cont"]]:
    """For each (prompt, continuation): the log-probability of every continuation token given what precedes it."""
    out: list[Tensor] = [torch.empty(0)] * len(prompts)
    for i, rows in _batched_distributions(
        model, prompts, continuations, max_batch=max_batch, max_tokens=max_tokens, progress=progress
    ):
        c = torch.tensor(list(continuations[i]), dtype=torch.long)
        out[i] = rows[torch.arange(len(c)), c].clone()
    return out


def split_text_ids(model: HookedModel, text: str) -> tuple[list[int], list[int]]:
    """A text's token ids as (head, scored): the scored tokens are every token after the first of the
    encoded text (its BOS, when the tokenizer prepends one, else its first text token), the head what precedes them."""
    ids = encode_texts(model, [text])[0]
    if len(ids) < 2:
        raise LensSteerError(f"text {text[:60]!r} encodes to fewer than two tokens; nothing to score")
    return ids[:1], ids[1:]


def text_token_logprobs(
    model: HookedModel, texts: Sequence[str], *, max_batch: int = 16, progress: Progress | None = None
) -> list[Float[Tensor, " n_scored"]]:
    """Per text, the log-probability of each scored token (`split_text_ids`); progress counts texts."""
    split = [split_text_ids(model, t) for t in texts]
    return continuation_logprobs(
        model, [h for h, _ in split], [b for _, b in split], max_batch=max_batch, progress=progress
    )


def prefixed_head(model: HookedModel, head: Sequence[int], prefix: str) -> list[int]:
    """`head` with the tokens of `prefix` inserted: after a BOS head, else before the head's first text token."""
    tok = model.tokenizer
    prefix_ids = list(tok(prefix, add_special_tokens=False)["input_ids"]) if prefix else []
    bos = tok.bos_token_id
    if bos is not None and list(head[:1]) == [bos]:
        return [bos, *prefix_ids, *head[1:]]
    return [*prefix_ids, *head]
