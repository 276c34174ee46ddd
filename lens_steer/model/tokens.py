"""Tokenising text batches for forward passes: BOS rule, padding side, attention masks, length buckets."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Literal

import torch
from jaxtyping import Int
from torch import Tensor

from lens_steer.model.load import HookedModel, plain_text_bos

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


BOS_POLICY = "tokenizer-default"  # recorded with every prediction file and vector


def encode_texts(model: HookedModel, texts: Sequence[str], *, prepend_bos: bool | None = None) -> list[list[int]]:
    """Token ids of each text.

    `prepend_bos=None` follows the checkpoint tokenizer's own default for plain text (as Hugging Face and
    lm-evaluation-harness do; see `models.plain_text_bos`), except that a text already starting with the
    BOS string gets no second one; True makes sure a BOS leads; False adds none. No other special token
    is added."""
    tokenizer = model.tokenizer
    bos_text = tokenizer.bos_token
    bos_id = tokenizer.bos_token_id
    want = plain_text_bos(model) if prepend_bos is None else prepend_bos
    out = []
    for text in texts:
        row = list(tokenizer(text, add_special_tokens=False)["input_ids"])
        if want and bos_id is not None and not (bos_text and text.startswith(bos_text)):
            row = [bos_id, *row]
        out.append(row)
    return out


def starts_with_bos(model: HookedModel, ids: Sequence[int]) -> bool:
    """Whether a token sequence begins with the model's BOS token."""
    bos_id = model.tokenizer.bos_token_id
    return bos_id is not None and len(ids) > 0 and int(ids[0]) == int(bos_id)


def bos_record(model: HookedModel, prepend_bos: bool | None = None) -> dict[str, object]:
    """How BOS is decided for plain text, for provenance: the policy and what it does for this tokenizer."""
    tokenizer = model.tokenizer
    probe = encode_texts(model, ["a"], prepend_bos=prepend_bos)[0]
    policy = BOS_POLICY if prepend_bos is None else ("always" if prepend_bos else "never")
    return {"bos_policy": policy, "bos_token": tokenizer.bos_token, "bos_on_plain_text": starts_with_bos(model, probe)}


def pad_batch(
    rows: Sequence[Sequence[int]],
    *,
    pad_id: int,
    padding_side: PaddingSide = "right",
    device: str | torch.device = "cpu",
) -> TokenBatch:
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
