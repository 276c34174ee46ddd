"""Log-probabilities of continuation tokens after prompts, through the forward engine: token ids in, per-token
log-probs (or whole next-token distributions, for methods that rescale them) out; a text's own tokens after its
first (StereoSet, the self-debias baselines). One row per (prompt + continuation) sequence, length-bucketed and
right-padded (`RunPlan(prefix_tree=False)`); only the continuation's positions are unembedded."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Float
from torch import Tensor

from lens_steer.errors import LensSteerError
from lens_steer.forward.engine import Row, RunPlan, run_rows
from lens_steer.model.load import HookedModel
from lens_steer.model.tokens import encode_texts
from lens_steer.progress import Progress


def _continuation_rows(
    prompts: Sequence[Sequence[int]], continuations: Sequence[Sequence[int]], *, whole: bool
) -> list[Row]:
    """One row per (prompt, continuation), reading at each continuation token's position its log-prob or (`whole`)
    the whole distribution."""
    if len(prompts) != len(continuations):
        raise LensSteerError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    rows = []
    for i, (p, c) in enumerate(zip(prompts, continuations)):
        if not p or not c:
            raise LensSteerError(f"sequence {i}: the prompt and the continuation each need at least one token")
        positions = list(range(len(p) - 1, len(p) - 1 + len(c)))
        rows.append(Row([*map(int, p), *map(int, c)], positions, targets=None if whole else [int(t) for t in c]))
    return rows


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
    plan = RunPlan(prefix_tree=False, max_batch=max_batch, max_tokens=max_tokens)
    rows = _continuation_rows(prompts, continuations, whole=True)
    return [torch.from_numpy(x) for x in run_rows(model, rows, plan, progress=progress)]


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
    plan = RunPlan(prefix_tree=False, max_batch=max_batch, max_tokens=max_tokens)
    rows = _continuation_rows(prompts, continuations, whole=False)
    return [torch.from_numpy(x) for x in run_rows(model, rows, plan, progress=progress)]


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
