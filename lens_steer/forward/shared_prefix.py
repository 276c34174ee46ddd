"""A shared prefix run once: its Hugging Face KV cache extended by each row that follows it.

Extraction runs the token prefix common to all its texts (a persona's system prompt) once and every batch
continues from it (`common_token_prefix`); `run_shared_prefix` runs any batch of prefixes once (the tests' cloze
oracle runs each prompt once and continues it with each of its options). Both then call
`SharedPrefix.row_kwargs`: one copy of the prefix keys/values per row, and the joint attention mask. Scoring runs
shared prefixes through the prefix tree (`prefix_tree`) instead. Only models whose forward takes `past_key_values`
(TL 4 bridges; `models.accepts_kv_cache`) can do this.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from jaxtyping import Int
from torch import Tensor

from lens_steer.model.load import HookedModel

T = TypeVar("T")
MIN_SHARED_PREFIX = 8  # tokens; shorter common prefixes are not worth a separate pass


@dataclasses.dataclass
class SharedPrefix:
    """The KV cache of `prefixes` token sequences (padded as `attention_mask` says), ready to be extended."""

    cache: Any  # a transformers Cache holding [prefixes, heads, prefix_pos, d_head] per layer
    attention_mask: Int[Tensor, "prefixes prefix_pos"]

    @property
    def length(self) -> int:
        """Positions of the prefix (padding included)."""
        return int(self.attention_mask.shape[1])

    def filled(self) -> bool:
        """Whether the forward filled the cache over every prefix position (its first layer)."""
        return int(self.cache.get_seq_length()) == self.length

    def row_kwargs(
        self, owner: Int[Tensor, " rows"], rows_mask: Int[Tensor, "rows pos"], *, reuse: bool = False
    ) -> dict[str, Any]:
        """Forward keyword arguments continuing prefix `owner[r]` with row r's tokens (padded as `rows_mask` says):
        the prefix keys/values, one copy per row, and the mask over prefix and row.

        With `reuse` the cache is copied first and serves later calls; otherwise it is reordered in place (used
        once)."""
        past = copy.deepcopy(self.cache) if reuse else self.cache
        past.reorder_cache(owner)
        mask = torch.cat([self.attention_mask[owner].to(rows_mask.dtype), rows_mask], dim=1)
        return {"past_key_values": past, "attention_mask": mask}


def new_kv_cache() -> Any:
    """An empty Hugging Face KV cache for a forward to fill."""
    from transformers import DynamicCache

    return DynamicCache()


def run_shared_prefix(
    run: Callable[[Any], T], attention_mask: Int[Tensor, "prefixes prefix_pos"]
) -> tuple[T, SharedPrefix]:
    """`run(cache)` (a forward over the prefix tokens that fills `cache`), its result and the filled prefix."""
    cache = new_kv_cache()
    with torch.inference_mode():
        out = run(cache)
    return out, SharedPrefix(cache, attention_mask)


def common_prefix_length(ids: Sequence[Sequence[int]]) -> int:
    """Tokens every sequence starts with, leaving at least one token of each sequence after them."""
    first = ids[0]
    n = min(len(r) for r in ids) - 1
    for row in ids[1:]:
        k = 0
        while k < n and row[k] == first[k]:
            k += 1
        n = k
    return max(n, 0)


def common_token_prefix(
    model: HookedModel, ids: Sequence[Sequence[int]], *, stop_at_layer: int | None = None
) -> SharedPrefix | None:
    """The token prefix all of `ids` share, run once at blocks below `stop_at_layer` (all: None), or None when it
    is shorter than `MIN_SHARED_PREFIX` or the model does not fill a KV cache."""
    shared = common_prefix_length(ids)
    if shared < MIN_SHARED_PREFIX:
        return None
    device = next(iter(model.parameters())).device  # type: ignore[attr-defined]
    tokens = torch.tensor([list(ids[0][:shared])], device=device)
    _, prefix = run_shared_prefix(
        lambda cache: model(tokens, stop_at_layer=stop_at_layer, past_key_values=cache),
        torch.ones(1, shared, dtype=torch.long, device=device),
    )
    return prefix if prefix.filled() else None
