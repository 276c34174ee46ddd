"""The forward engine: rows of token ids in, log-probabilities at the positions each row reads out, through one
final norm and unembedding (`Unembed`, with Gemma 2's soft-cap) and one log-softmax; over a prefix tree (each
distinct prefix once) where the model takes a KV cache, else in length-bucketed batches; the residual entering a
block reused from a `ResidualCache`."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lens_steer.errors import LensSteerError
from lens_steer.forward.prefix_tree import DEFAULT_ROW_TOKENS, TreePlan, kv_bytes_per_token, run_tree
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
from lens_steer.model.tokens import length_batches, pad_batch, pad_id
from lens_steer.progress import Progress
from lens_steer.steering.interventions import Intervention
from lens_steer.steering.vectors import SteeringVector


class _FinalResidual(Exception):
    """Raised by a hook to stop the forward pass after the last block (before the unembedding)."""


@dataclasses.dataclass
class Row:
    """One sequence to run: token ids, positions whose next-token distribution is read, and what to read there."""

    ids: list[int]
    positions: list[int]
    candidates: list[int] | None = None  # letter rows: logits of these ids at positions[0]
    targets: list[int] | None = None  # cloze rows: log-prob of targets[i] at positions[i]


class Unembed:
    """Final norm and unembedding of selected residual vectors."""

    def __init__(self, model: HookedModel) -> None:
        self.ln_final = model.ln_final  # type: ignore[attr-defined]
        self.W_U: Tensor = model.W_U.detach()  # type: ignore[attr-defined]  # [d_model, vocab]
        b_U = getattr(model, "b_U", None)
        self.b_U: Tensor | None = None if b_U is None or not bool(b_U.abs().max() > 0) else b_U.detach()
        self.softcap = final_logit_softcap(hf_config(model))  # Gemma 2 caps its logits: c * tanh(logits / c)

    def logits(self, resid: Tensor) -> Tensor:
        out = self.ln_final(resid) @ self.W_U
        if self.b_U is not None:
            out = out + self.b_U
        if self.softcap is not None:
            out = self.softcap * torch.tanh(out / self.softcap)
        return out.float()


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


def forward_batch(
    model: HookedModel,
    tokens: Tensor,
    forward_kwargs: dict[str, Any],
    reuse: ResidualReuse | None,
    key: str,
    stored: Tensor | None,
) -> Tensor:
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


def run_rows(
    model: HookedModel,
    rows: Sequence[Row],
    *,
    max_batch: int,
    max_tokens: int,
    progress: Progress | None,
    progress_unit: float,
    reuse: ResidualReuse | None = None,
    tree: bool = False,
) -> list[np.ndarray]:
    """For each row: candidate log-probs over the full vocabulary (letter rows) or target log-probs (cloze rows).

    With `tree` (and a model taking a KV cache) the rows' shared token prefixes run once (`prefix_tree`)."""
    if tree and accepts_kv_cache(model):
        return _tree_rows(
            model,
            rows,
            max_batch=max_batch,
            max_tokens=max_tokens,
            progress=progress,
            progress_unit=progress_unit,
            reuse=reuse,
        )
    device = next(iter(model.parameters())).device  # type: ignore[attr-defined]
    unembed = Unembed(model)
    out: list[np.ndarray] = [np.empty(0)] * len(rows)
    done = 0.0
    reported = 0
    for batch_idx in length_batches([len(r.ids) for r in rows], max_batch=max_batch, max_tokens=max_tokens):
        batch = pad_batch([rows[i].ids for i in batch_idx], pad_id=pad_id(model), padding_side="right", device=device)
        with torch.inference_mode():
            key = batch_key(batch.tokens) if reuse is not None else ""
            stored = reuse.cache.get(key, reuse.start) if reuse is not None else None
            resid = forward_batch(model, batch.tokens, batch.forward_kwargs(), reuse, key, stored)
            letter = [(j, i) for j, i in enumerate(batch_idx) if rows[i].candidates is not None]
            if letter:
                sel = resid[[j for j, _ in letter], [rows[i].positions[0] for _, i in letter]]
                logp = torch.log_softmax(unembed.logits(sel), dim=-1)  # full vocabulary: raw log-likelihoods
                for r, (_, i) in enumerate(letter):
                    out[i] = logp[r, rows[i].candidates].cpu().numpy()
            cloze = [(j, i) for j, i in enumerate(batch_idx) if rows[i].targets is not None]
            if cloze:
                bj = [j for j, i in cloze for _ in rows[i].positions]
                pos = [p for _, i in cloze for p in rows[i].positions]
                tgt = torch.tensor([t for _, i in cloze for t in rows[i].targets], device=device)  # type: ignore[union-attr]
                logp = torch.log_softmax(unembed.logits(resid[bj, pos]), dim=-1)
                picked = logp[torch.arange(len(pos), device=device), tgt].cpu().numpy()
                start = 0
                for _, i in cloze:
                    n = len(rows[i].positions)
                    out[i] = picked[start : start + n]
                    start += n
        done += len(batch_idx) * progress_unit
        if progress is not None and int(done) > reported:
            progress(int(done) - reported)
            reported = int(done)
    if progress is not None and reported < int(round(done)):
        progress(int(round(done)) - reported)
    return out


TREE_BATCH_SCALE = 4  # a tree batch may hold this many times `max_batch` rows and `max_tokens` positions


TREE_PADDING_SIDE = "right"  # how a tree batch pads its rows (paths are always left-padded); both are exact


def tree_row_tokens(model: HookedModel, seqs: Sequence[Sequence[int]]) -> int:
    """How many tokens a packed row of the prefix tree may hold for these sequences on this model: the default,
    or 0 (every segment its own row) where a sliding window shorter than the longest sequence would make a packed
    row's single mask wrong for the sliding layers."""
    window = sliding_window(hf_config(model))
    if window is not None and max(map(len, seqs)) > window:
        return 0
    return DEFAULT_ROW_TOKENS


def _tree_rows(
    model: HookedModel,
    rows: Sequence[Row],
    *,
    max_batch: int,
    max_tokens: int,
    progress: Progress | None,
    progress_unit: float,
    reuse: ResidualReuse | None,
    padding_side: str | None = None,
) -> list[np.ndarray]:
    """`run_rows` over a prefix tree of the rows' token ids. With `reuse`, the tree runs from block `reuse.start`
    only when every batch of it has its residual stored (the keys/values must cover the same blocks); else in full,
    storing them."""
    device = next(iter(model.parameters())).device  # type: ignore[attr-defined]
    unembed = Unembed(model)
    seqs = [r.ids for r in rows]
    plan = TreePlan(
        seqs,
        max_batch=max_batch * TREE_BATCH_SCALE,
        max_tokens=max_tokens * TREE_BATCH_SCALE,
        kv_bytes=kv_bytes_per_token(model),
        padding_side=padding_side or TREE_PADDING_SIDE,
        max_row=tree_row_tokens(model, seqs),
    )
    stored_all = reuse is not None and all(reuse.cache.get(b.key, reuse.start) is not None for b in plan.batches)
    reads = [
        [(r.positions[0], r.candidates)]
        if r.candidates is not None
        else [(p, [t]) for p, t in zip(r.positions, r.targets or [])]
        for r in rows
    ]

    def forward(tokens: Tensor, kwargs: dict[str, Any], key: str) -> Tensor:
        stored = reuse.cache.get(key, reuse.start) if reuse is not None and stored_all else None
        return forward_batch(model, tokens, kwargs, reuse, key, stored)

    state = {"done": 0.0, "reported": 0}

    def done(_: int) -> None:
        state["done"] += progress_unit
        if progress is not None and int(state["done"]) > state["reported"]:
            progress(int(state["done"]) - int(state["reported"]))
            state["reported"] = int(state["done"])

    with torch.inference_mode():
        got = run_tree(
            plan,
            seqs,
            reads,
            forward=forward,
            logits=unembed.logits,
            n_layers=int(model.cfg.n_layers),
            first_layer=reuse.start if stored_all and reuse is not None else 0,
            pad_id=pad_id(model),
            device=device,
            done=done,
        )
    if progress is not None and state["reported"] < int(round(state["done"])):
        progress(int(round(state["done"])) - int(state["reported"]))
    return [g[0] if r.candidates is not None else np.concatenate(g) for r, g in zip(rows, got)]
