"""The forward engine: rows of token ids in, log-probabilities at the positions each row reads out (`run_rows`).

One final norm and unembedding (`Unembed`, with Gemma 2's soft-cap) and one log-softmax over the vocabulary
(`Unembed.log_probs`); the rows run over a prefix tree (`prefix_tree`: each distinct prefix once) where the model
takes a KV cache, else in length-bucketed batches (TL 3.x HookedTransformer); the residual entering a block is
reused from a `ResidualCache` (`residual_cache`). How the rows run is one value handed down, `RunPlan`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from lens_steer.errors import LensSteerError
from lens_steer.forward.prefix_tree import DEFAULT_ROW_TOKENS, Read, TreePlan, kv_bytes_per_token, run_tree
from lens_steer.forward.residual_cache import (
    ResidualCache,
    batch_key,
    can_run_blocks,
    capture_hooks,
    run_blocks,
    start_block,
)
from lens_steer.model.architectures import final_logit_softcap, hf_config, sliding_window
from lens_steer.model.load import HookedModel, accepts_kv_cache
from lens_steer.model.tokens import length_batches, model_device, pad_batch, pad_id
from lens_steer.progress import Progress
from lens_steer.steering.interventions import Intervention
from lens_steer.steering.vectors import SteeringVector

TREE_BATCH_SCALE = 4  # a tree batch may hold this many times `max_batch` rows and `max_tokens` positions
PADDING_SIDES = ("left", "right")


class _FinalResidual(Exception):
    """Raised by a hook to stop the forward pass after the last block (before the unembedding)."""


@dataclasses.dataclass
class Row:
    """One sequence to run: token ids, the positions whose next-token distribution is read, and what is read there:
    the log-probs of the `candidates` at `positions[0]` (letter rows), the log-prob of `targets[i]` at
    `positions[i]` (cloze rows), or, with neither, the whole distribution at each position (`[positions, vocab]`)."""

    ids: list[int]
    positions: list[int]
    candidates: list[int] | None = None
    targets: list[int] | None = None

    def reads(self) -> list[tuple[int, list[int] | None]]:
        """(position, token ids whose log-probs are kept there; None: all of them) for each read."""
        if self.candidates is not None and self.targets is not None:
            raise LensSteerError("a row reads candidates or targets, not both; make two rows")
        if self.candidates is not None:
            return [(self.positions[0], list(self.candidates))]
        if self.targets is not None:
            if len(self.targets) != len(self.positions):
                raise LensSteerError(f"a row has {len(self.positions)} positions but {len(self.targets)} targets")
            return [(p, [t]) for p, t in zip(self.positions, self.targets)]
        return [(p, None) for p in self.positions]

    def result(self, got: Sequence[np.ndarray]) -> np.ndarray:
        """The row's answer from its reads' values: `[candidates]`, `[targets]` or `[positions, vocab]`."""
        if self.candidates is not None:
            return got[0]
        return np.concatenate(got) if self.targets is not None else np.stack(got)


class Unembed:
    """Final norm and unembedding of selected residual vectors, and their log-softmax over the vocabulary."""

    def __init__(self, model: HookedModel) -> None:
        self.ln_final = model.ln_final  # type: ignore[attr-defined]
        self.W_U: Tensor = model.W_U.detach()  # type: ignore[attr-defined]  # [d_model, vocab]
        b_U = getattr(model, "b_U", None)
        self.b_U: Tensor | None = None if b_U is None or not bool(b_U.abs().max() > 0) else b_U.detach()
        self.softcap = final_logit_softcap(hf_config(model))  # Gemma 2 caps its logits: c * tanh(logits / c)

    def logits(self, resid: Float[Tensor, "n d_model"]) -> Float[Tensor, "n vocab"]:
        """float32 logits of residual vectors after the last block."""
        out = self.ln_final(resid) @ self.W_U
        if self.b_U is not None:
            out = out + self.b_U
        if self.softcap is not None:
            out = self.softcap * torch.tanh(out / self.softcap)
        return out.float()

    def log_probs(self, resid: Float[Tensor, "n d_model"]) -> Float[Tensor, "n vocab"]:
        """Next-token log-probabilities over the full vocabulary (raw log-likelihoods)."""
        return torch.log_softmax(self.logits(resid), dim=-1)


def final_residual(
    model: HookedModel, tokens: Tensor, forward_kwargs: dict[str, Any], extra_hooks: Sequence[tuple[str, Any]] = ()
) -> Tensor:
    """Residual stream after the last block, `[batch, pos, d_model]`; the unembedding is never run.

    `extra_hooks` run during the same forward (e.g. capturing the residual at earlier blocks)."""
    name = f"blocks.{int(model.cfg.n_layers) - 1}.hook_resid_post"
    box: dict[str, Tensor] = {}

    def grab(tensor: Tensor, *, hook: Any) -> None:
        box["resid"] = tensor
        raise _FinalResidual

    try:
        with model.hooks(fwd_hooks=[*extra_hooks, (name, grab)]):
            model(tokens, **forward_kwargs)
    except _FinalResidual:
        pass
    if "resid" not in box:
        raise LensSteerError(f"hook {name} did not fire; the model does not follow the TransformerLens hook API")
    return box["resid"]


@dataclasses.dataclass(frozen=True)
class ResidualReuse:
    """Reuse of the residual entering block `start` (unchanged by the active steering) from `cache`."""

    cache: ResidualCache
    start: int


def residual_reuse_for(
    model: HookedModel, cache: ResidualCache | None, steering: SteeringVector | Intervention | None
) -> ResidualReuse | None:
    """How a forward under `steering` (a vector or an intervention) can reuse `cache`, or None (no cache, unsteered,
    or the model cannot run from a block)."""
    if cache is None or steering is None:
        return None
    start = start_block(steering.hook_names.values())
    if start is None or not can_run_blocks(model):
        return None
    return ResidualReuse(cache, start)


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """How the engine runs rows (what they read is theirs): over a prefix tree where `prefix_tree` and the model
    takes a KV cache, else in length-bucketed batches of at most `max_batch` rows and `max_tokens` padded positions
    (a tree batch: `TREE_BATCH_SCALE` times both). A tree row packs whole subtrees of up to `row_tokens` tokens
    (0: one segment per row, as it is anyway where a sliding window binds, `tree_row_tokens`) and pads its rows on
    `tree_padding_side` (both are exact). With `reuse`, the residual entering block `reuse.start` comes from its
    cache where stored."""

    prefix_tree: bool = True
    row_tokens: int = DEFAULT_ROW_TOKENS
    max_batch: int = 16
    max_tokens: int = 3072
    reuse: ResidualReuse | None = None
    tree_padding_side: str = "right"

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_tokens < 1:
            raise LensSteerError(
                f"a run needs max_batch and max_tokens >= 1, got {self.max_batch} and {self.max_tokens}"
            )
        if self.row_tokens < 0:
            raise LensSteerError(
                f"a packed tree row needs row_tokens >= 0 (0: one segment per row), got {self.row_tokens}"
            )
        if self.tree_padding_side not in PADDING_SIDES:
            raise LensSteerError(f"unknown padding side {self.tree_padding_side!r}; use left or right")


def tree_row_tokens(model: HookedModel, seqs: Sequence[Sequence[int]], budget: int = DEFAULT_ROW_TOKENS) -> int:
    """How many tokens a packed row of the prefix tree may hold for these sequences on this model: `budget`, or 0
    (every segment its own row) where a sliding window shorter than the longest sequence would make a packed row's
    single mask wrong for the sliding layers."""
    window = sliding_window(hf_config(model))
    if window is not None and max(map(len, seqs)) > window:
        return 0
    return budget


def plan_tree(model: HookedModel, seqs: Sequence[Sequence[int]], plan: RunPlan) -> TreePlan:
    """The prefix-tree layout (`prefix_tree.TreePlan`) the engine runs these sequences in under `plan`."""
    return TreePlan(
        seqs,
        max_batch=plan.max_batch * TREE_BATCH_SCALE,
        max_tokens=plan.max_tokens * TREE_BATCH_SCALE,
        kv_bytes=kv_bytes_per_token(model),
        padding_side=plan.tree_padding_side,
        max_row=tree_row_tokens(model, seqs, plan.row_tokens),
    )


def run_rows(
    model: HookedModel,
    rows: Sequence[Row],
    plan: RunPlan,
    *,
    progress: Progress | None = None,
    progress_unit: float = 1.0,
) -> list[np.ndarray]:
    """For each row, what it reads (`Row.result`), run as `plan` says; `progress` advances `progress_unit` per row."""
    reads = [r.reads() for r in rows]
    counter = _Counter(progress, progress_unit)
    if plan.prefix_tree and accepts_kv_cache(model):
        got = _tree_reads(model, rows, reads, plan, counter)
    else:
        got = _bucketed_reads(model, rows, reads, plan, counter)
    counter.finish()
    return [r.result(g) for r, g in zip(rows, got)]


class _Counter:
    """Whole progress units reported as rows finish (`progress_unit` each)."""

    def __init__(self, progress: Progress | None, unit: float) -> None:
        self.progress, self.unit = progress, unit
        self.done, self.reported = 0.0, 0

    def add(self, rows: int) -> None:
        self.done += rows * self.unit
        if self.progress is not None and int(self.done) > self.reported:
            self.progress(int(self.done) - self.reported)
            self.reported = int(self.done)

    def finish(self) -> None:
        if self.progress is not None and self.reported < int(round(self.done)):
            self.progress(int(round(self.done)) - self.reported)


def _forward_batch(
    model: HookedModel,
    tokens: Tensor,
    forward_kwargs: dict[str, Any],
    reuse: ResidualReuse | None,
    key: str,
    stored: Tensor | None,
) -> Float[Tensor, "batch pos d_model"]:
    """Final residual of a batch: from `stored` (its residual entering block `reuse.start`), or a full
    forward that also stores the batch's residuals in `reuse.cache`."""
    if stored is not None and reuse is not None:
        return run_blocks(
            model,
            stored,
            reuse.start,
            attention_mask=forward_kwargs.get("attention_mask"),
            past_key_values=forward_kwargs.get("past_key_values"),
            position_ids=forward_kwargs.get("position_ids"),
        )
    if reuse is None:
        return final_residual(model, tokens, forward_kwargs)
    captured: dict[int, Tensor] = {}
    resid = final_residual(
        model, tokens, forward_kwargs, capture_hooks(reuse.cache.capture_layers(reuse.start), captured)
    )
    reuse.cache.put(key, captured)
    return resid


def _bucketed_reads(
    model: HookedModel,
    rows: Sequence[Row],
    reads: Sequence[Sequence[tuple[int, list[int] | None]]],
    plan: RunPlan,
    counter: _Counter,
) -> list[list[np.ndarray]]:
    """Per row, per read, its values: one full forward per row, in right-padded length buckets."""
    device = model_device(model)
    unembed = Unembed(model)
    reuse = plan.reuse
    out: list[list[np.ndarray]] = [[] for _ in rows]
    batches = length_batches([len(r.ids) for r in rows], max_batch=plan.max_batch, max_tokens=plan.max_tokens)
    for batch_idx in batches:
        batch = pad_batch([rows[i].ids for i in batch_idx], pad_id=pad_id(model), padding_side="right", device=device)
        with torch.inference_mode():
            key = batch_key(batch.tokens) if reuse is not None else ""
            stored = reuse.cache.get(key, reuse.start) if reuse is not None else None
            resid = _forward_batch(model, batch.tokens, batch.forward_kwargs(), reuse, key, stored)
            at = [(j, i, k) for j, i in enumerate(batch_idx) for k in range(len(reads[i]))]
            logp = unembed.log_probs(resid[[j for j, _, _ in at], [reads[i][k][0] for _, i, k in at]])
            picks = [(n, i, k) for n, (_, i, k) in enumerate(at) if reads[i][k][1] is not None]
            flat_rows = [n for n, i, k in picks for _ in reads[i][k][1] or ()]
            flat_ids = [t for _, i, k in picks for t in reads[i][k][1] or ()]
            picked = logp[flat_rows, flat_ids].cpu().numpy() if picks else np.empty(0, dtype=np.float32)
            whole = [n for n, (_, i, k) in enumerate(at) if reads[i][k][1] is None]
            rows_out = logp[whole].cpu().numpy() if whole else np.empty((0, 0), dtype=np.float32)
        values: dict[tuple[int, int], np.ndarray] = {}
        start = 0
        for _, i, k in picks:
            n = len(reads[i][k][1] or ())
            values[(i, k)] = picked[start : start + n]
            start += n
        for r, n in enumerate(whole):
            _, i, k = at[n]
            values[(i, k)] = rows_out[r]
        for i in batch_idx:
            out[i] = [values[(i, k)] for k in range(len(reads[i]))]
        counter.add(len(batch_idx))
    return out


def _tree_reads(
    model: HookedModel,
    rows: Sequence[Row],
    reads: Sequence[Sequence[tuple[int, list[int] | None]]],
    plan: RunPlan,
    counter: _Counter,
) -> list[list[np.ndarray]]:
    """Per row, per read, its values: over a prefix tree of the rows' token ids (`plan_tree`). With `plan.reuse`,
    the tree runs from block `reuse.start` only when every batch of it has its residual stored (the keys/values must
    cover the same blocks); else in full, storing them."""
    if any(ids is None for r in reads for _, ids in r):
        raise LensSteerError("whole-distribution rows run without the prefix tree; use RunPlan(prefix_tree=False)")
    tree_reads: list[list[Read]] = [[(p, ids or []) for p, ids in r] for r in reads]
    seqs = [r.ids for r in rows]
    layout = plan_tree(model, seqs, plan)
    reuse = plan.reuse
    stored_all = reuse is not None and all(reuse.cache.get(b.key, reuse.start) is not None for b in layout.batches)

    def forward(tokens: Tensor, kwargs: dict[str, Any], key: str) -> Tensor:
        stored = reuse.cache.get(key, reuse.start) if reuse is not None and stored_all else None
        return _forward_batch(model, tokens, kwargs, reuse, key, stored)

    with torch.inference_mode():
        return run_tree(
            layout,
            seqs,
            tree_reads,
            forward=forward,
            log_probs=Unembed(model).log_probs,
            n_layers=int(model.cfg.n_layers),
            first_layer=reuse.start if stored_all and reuse is not None else 0,
            pad_id=pad_id(model),
            device=model_device(model),
            done=lambda _: counter.add(1),
        )
