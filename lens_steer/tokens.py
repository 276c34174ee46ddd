"""Tokenising text batches for forward passes: BOS rule, padding side, attention masks, length buckets."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import torch
from jaxtyping import Int
from torch import Tensor

from lens_steer.models import HookedModel

PaddingSide = Literal["left", "right"]


@dataclasses.dataclass(frozen=True)
class TokenBatch:
    """Padded token ids with their real lengths."""

    tokens: Int[Tensor, "batch pos"]
    lengths: Int[Tensor, " batch"]
    padding_side: PaddingSide

    @property
    def attention_mask(self) -> Int[Tensor, "batch pos"]:
        """1 on real tokens, 0 on padding."""
        pos = torch.arange(self.tokens.shape[1], device=self.tokens.device)
        if self.padding_side == "right":
            return (pos[None, :] < self.lengths[:, None]).long()
        return (pos[None, :] >= (self.tokens.shape[1] - self.lengths)[:, None]).long()

    @property
    def last_index(self) -> Int[Tensor, " batch"]:
        """Position of each row's last real token."""
        if self.padding_side == "right":
            return self.lengths - 1
        return torch.full_like(self.lengths, self.tokens.shape[1] - 1)

    def forward_kwargs(self) -> dict[str, Tensor]:
        """Keyword arguments for the model's forward: a mask only where padding could change real tokens."""
        if self.padding_side == "left" and bool((self.lengths < self.tokens.shape[1]).any()):
            return {"attention_mask": self.attention_mask}
        return {}  # right padding: causal attention keeps real tokens independent of later pads


def encode_texts(model: HookedModel, texts: Sequence[str], *, prepend_bos: bool | None = None) -> list[list[int]]:
    """Token ids of each text; BOS is prepended (if the model wants one) unless the text already starts with it."""
    tokenizer = model.tokenizer
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    bos_text = tokenizer.bos_token
    default = bool(getattr(model.cfg, "default_prepend_bos", True))
    out = []
    for text, row in zip(texts, ids):
        want = default if prepend_bos is None else prepend_bos
        if want and tokenizer.bos_token_id is not None and not (bos_text and text.startswith(bos_text)):
            row = [tokenizer.bos_token_id, *row]
        out.append(list(row))
    return out


def pad_batch(rows: Sequence[Sequence[int]], *, pad_id: int, padding_side: PaddingSide = "right", device: str | torch.device = "cpu") -> TokenBatch:
    """Pad token id lists into one tensor."""
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("cannot pad an empty batch or an empty sequence")
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, r in enumerate(rows):
        if padding_side == "right":
            tokens[i, : len(r)] = torch.tensor(r)
        else:
            tokens[i, width - len(r) :] = torch.tensor(r)
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    return TokenBatch(tokens.to(device), lengths.to(device), padding_side)


def pad_id(model: HookedModel) -> int:
    """The pad id to use (pad, else eos, else 0); padding never reaches a real token's computation."""
    tok = model.tokenizer
    for candidate in (tok.pad_token_id, tok.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def length_batches(lengths: Sequence[int], *, max_batch: int = 16, max_tokens: int = 4096) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), each within both budgets."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = max([lengths[j] for j in current] + [lengths[i]])
        if current and (len(current) + 1 > max_batch or width * (len(current) + 1) > max_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def model_device(model: HookedModel) -> torch.device:
    """The device of the model's parameters."""
    return next(iter(model.parameters())).device  # type: ignore[attr-defined]
