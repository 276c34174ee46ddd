"""The residual stream entering the first steered block: stored once per token batch, reused by later steered runs.

Steering at block `s` or later cannot change what enters block `s`, so a search that scores the same
validation items under many vectors keeps `blocks.{s}.hook_resid_pre` of every batch (a `ResidualCache`,
captured during an ordinary forward) and later runs only blocks `s..n-1` from it. On a `TransformerBridge` the blocks
are called directly with the Hugging Face model's own rotary embeddings and mask (the bridge's
`start_at_layer` still executes blocks `0..s-1`); on TL 3.x `HookedTransformer` its native
`start_at_layer` does the same. Hooks inside the blocks run fire as in a full forward.
"""

from __future__ import annotations

import collections
import hashlib
import inspect
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from lens_steer.errors import LensSteerError
from lens_steer.model.architectures import FULL_ATTENTION, SLIDING_ATTENTION, family_of, layer_attention_types
from lens_steer.model.load import HookedModel

_BLOCK_PREFIX = "blocks."


def start_block(hook_names: Iterable[str]) -> int | None:
    """The block whose input is the last residual no hook in `hook_names` can change, or None.

    None when a hook sits outside the blocks (embeddings, final norm) or nothing before block 1 is reusable.
    """
    first: int | None = None
    pre_hooked: set[int] = set()
    for name in hook_names:
        if not name.startswith(_BLOCK_PREFIX):
            return None
        index, _, rest = name[len(_BLOCK_PREFIX) :].partition(".")
        if not index.isdigit():
            return None
        layer = int(index)
        first = layer if first is None else min(first, layer)
        if rest == "hook_resid_pre":
            pre_hooked.add(layer)
    if first is None:
        return None
    start = first - 1 if first in pre_hooked else first  # a hook on block s's input changes that input
    return start if start >= 1 else None


def batch_key(*tensors: Tensor) -> str:
    """A digest of token tensors (shape and values): the identity of a batch."""
    h = hashlib.sha256()
    for t in tensors:
        arr = t.detach().to("cpu", torch.int64).contiguous()
        h.update(repr(tuple(arr.shape)).encode())
        h.update(arr.numpy().tobytes())
    return h.hexdigest()


class ResidualCache:
    """`blocks.{layer}.hook_resid_pre` of token batches at the chosen `layers`, keyed by `batch_key`.

    Least-recently-used batches are dropped beyond `max_bytes`; a dropped batch is simply recomputed.
    `hits` and `misses` count lookups.
    """

    def __init__(self, layers: Iterable[int], *, max_bytes: int = 2 << 30) -> None:
        self.layers: tuple[int, ...] = tuple(sorted({int(x) for x in layers}))
        if not self.layers or self.layers[0] < 1:
            raise LensSteerError(f"residual cache layers must be block indices >= 1, got {list(self.layers)}")
        if max_bytes < 1:
            raise LensSteerError(f"residual cache needs max_bytes >= 1, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._entries: collections.OrderedDict[str, dict[int, Tensor]] = collections.OrderedDict()
        self.nbytes = 0
        self.hits = self.misses = 0

    def capture_layers(self, start: int) -> tuple[int, ...]:
        """Layers to keep from a forward whose first steered block is `start`: ours up to `start`, and `start`."""
        return tuple(sorted({x for x in self.layers if x <= start} | {start}))

    def get(self, key: str, layer: int) -> Float[Tensor, "batch pos d_model"] | None:
        """The stored residual entering block `layer` for batch `key`, or None."""
        entry = self._entries.get(key)
        if entry is None or layer not in entry:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[layer]

    def put(self, key: str, residuals: Mapping[int, Tensor]) -> None:
        """Store residuals (by layer) of batch `key`, merging with what is there."""
        entry = self._entries.setdefault(key, {})
        for layer, resid in residuals.items():
            if layer in entry:
                continue
            entry[layer] = resid
            self.nbytes += resid.numel() * resid.element_size()
        self._entries.move_to_end(key)
        while self.nbytes > self.max_bytes and len(self._entries) > 1:
            _, dropped = self._entries.popitem(last=False)
            self.nbytes -= sum(t.numel() * t.element_size() for t in dropped.values())


# ---- running blocks s..n-1 ---------------------------------------------------------------------
def _module_at(root: Any, path: str) -> Any:
    for part in path.split("."):
        root = getattr(root, part, None)
    return root


def _bridge_parts(model: HookedModel) -> tuple[Any, Any] | None:
    """(HF causal LM, the module holding its decoder layers) when the bridge's blocks can be called directly.

    The decoder stack is found where `architectures` says the family keeps it ("model.layers" otherwise);
    full and sliding-window layers are supported, other attention kinds (chunked, linear) are not."""
    hf = getattr(model, "original_model", None)
    blocks = getattr(model, "blocks", None)
    if hf is None or blocks is None:
        return None
    fam = family_of(hf.config)
    layers_path = fam.decoder_layers if fam is not None else "model.layers"
    inner, layers = _module_at(hf, layers_path.rsplit(".", 1)[0]), _module_at(hf, layers_path)
    if inner is None or layers is None or len(layers) != len(blocks) or any(a is not b for a, b in zip(layers, blocks)):
        return None
    config = hf.config
    if set(layer_attention_types(config)) - {FULL_ATTENTION, SLIDING_ATTENTION} or getattr(
        config, "use_bidirectional_attention", False
    ):
        return None
    try:
        from transformers.masking_utils import create_causal_mask
    except ImportError:
        return None
    if "layer_idx" not in inspect.signature(create_causal_mask).parameters:
        return None
    decoder = getattr(blocks[0], "original_component", None)
    if decoder is None:
        return None
    rotary = getattr(inner, "rotary_emb", None)
    if rotary is not None and "position_embeddings" not in inspect.signature(decoder.forward).parameters:
        return None
    if rotary is None and fam is None:  # an unknown family without rotary embeddings: positions may enter elsewhere
        return None
    return hf, inner


def _is_hooked_transformer(model: HookedModel) -> bool:
    try:
        from transformer_lens import HookedTransformer
    except ImportError:
        return False
    return isinstance(model, HookedTransformer)


def can_run_blocks(model: HookedModel) -> bool:
    """Whether `run_blocks` can run this model's forward from a block (a TL 3.x model: without a KV cache)."""
    return _bridge_parts(model) is not None or _is_hooked_transformer(model)


def run_blocks(
    model: HookedModel,
    resid: Float[Tensor, "batch pos d_model"],
    start: int,
    *,
    attention_mask: Tensor | None = None,
    past_key_values: Any = None,
    position_ids: Tensor | None = None,
) -> Float[Tensor, "batch pos d_model"]:
    """Residual after the last block, running blocks `start..n-1` on `resid` (the input of block `start`).

    `attention_mask` is 2-D over the earlier (KV-cached) tokens and these, or a 4-D boolean mask `[batch, 1, pos,
    past + pos]` used as it is (bridge only); positions are `position_ids`, else follow a 2-D mask (as the bridge
    derives them). `past_key_values` (a Hugging Face cache, bridge only) holds the keys and values of earlier
    tokens at blocks `start..n-1` and is extended in place.
    """
    n_layers = int(model.cfg.n_layers)
    if not 1 <= start < n_layers:
        raise LensSteerError(f"cannot run from block {start}; the model has blocks 0..{n_layers - 1}")
    parts = _bridge_parts(model)
    if parts is None:
        if past_key_values is not None or position_ids is not None or not _is_hooked_transformer(model):
            raise LensSteerError(
                f"model {getattr(model.cfg, 'model_name', '?')!r} cannot run from a block; "
                "evaluate without a residual cache"
            )
        return _run_hooked_transformer(model, resid, start, attention_mask)
    hf, inner = parts
    batch, q = resid.shape[:2]
    past = int(past_key_values.get_seq_length(start)) if past_key_values is not None else 0
    if position_ids is not None:
        positions = position_ids
    elif attention_mask is not None:
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -q:]
    else:
        positions = torch.arange(past, past + q, device=resid.device)[None].expand(batch, q)
    kinds = layer_attention_types(hf.config)
    masks = {
        kind: _attention_mask(
            kind, hf.config, resid, attention_mask, past_key_values, positions, kinds.index(kind, start)
        )
        for kind in set(kinds[start:])
    }
    rotary = _rotary_embeddings(inner, resid, positions, set(kinds[start:]))
    hidden = resid
    for i in range(start, n_layers):
        kwargs: dict[str, Any] = {
            "attention_mask": masks[kinds[i]],
            "position_ids": positions,
            "past_key_values": past_key_values,
            "use_cache": past_key_values is not None,
        }
        if rotary is not None:
            kwargs["position_embeddings"] = rotary[kinds[i]]
        out = model.blocks[i](hidden, **kwargs)  # type: ignore[attr-defined]
        hidden = out[0] if isinstance(out, tuple) else out
    return hidden


def _attention_mask(
    kind: str,
    config: Any,
    resid: Tensor,
    attention_mask: Tensor | None,
    past_key_values: Any,
    positions: Tensor,
    layer_idx: int,
) -> Any:
    """The mask the HF model builds for layers of `kind` (full or sliding window), sized by layer `layer_idx`'s
    cache."""
    from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

    make = create_sliding_window_causal_mask if kind == SLIDING_ATTENTION else create_causal_mask
    return make(
        config=config,
        inputs_embeds=resid,
        attention_mask=attention_mask,
        past_key_values=past_key_values,
        position_ids=positions,
        layer_idx=layer_idx,
    )


def _rotary_embeddings(inner: Any, resid: Tensor, positions: Tensor, kinds: set[str]) -> dict[str, Any] | None:
    """Per attention kind, the rotary (cos, sin) the HF model computes (Gemma 3: one table per kind), or None without
    rotary."""
    rotary = getattr(inner, "rotary_emb", None)
    if rotary is None:
        return None
    if (
        "layer_type" in inspect.signature(getattr(rotary, "original_component", rotary).forward).parameters
    ):  # the bridge wraps it
        return {kind: rotary(resid, positions, kind) for kind in kinds}
    shared = rotary(resid, position_ids=positions)
    return {kind: shared for kind in kinds}


def _run_hooked_transformer(model: HookedModel, resid: Tensor, start: int, attention_mask: Tensor | None) -> Tensor:
    box: dict[str, Tensor] = {}
    name = f"blocks.{int(model.cfg.n_layers) - 1}.hook_resid_post"

    def grab(tensor: Tensor, *, hook: Any) -> None:
        box["resid"] = tensor

    kwargs: dict[str, Any] = {"start_at_layer": start, "return_type": None}
    if attention_mask is not None:
        kwargs["attention_mask"] = attention_mask
    with model.hooks(fwd_hooks=[(name, grab)]):
        model(resid, **kwargs)
    return box["resid"]


def capture_hooks(layers: Sequence[int], box: dict[int, Tensor]) -> list[tuple[str, Any]]:
    """Hooks copying `blocks.{l}.hook_resid_pre` into `box[l]` for each layer."""

    def make(layer: int) -> Any:
        def grab(tensor: Tensor, *, hook: Any) -> None:
            box[layer] = tensor.detach().clone()

        return grab

    return [(f"blocks.{layer}.hook_resid_pre", make(layer)) for layer in layers]
