"""A tree of shared token prefixes: each distinct prefix of a set of sequences runs once, its KV cache extended per branch.

The sequences (each item's prompt, or prompt + option, exactly as tokenised) go into a trie over token ids whose
unary chains are merged into segments (`build_tree`): the shared system prompt and instruction, then a BBQ context
shared by its variants, then each question, then each option. Segments run level by level in batches
(`TreePlan`); a segment's forward continues the keys/values of its whole path from the root, which are left-padded
so that the real tokens of path and segment stay contiguous (exact with sliding windows too), and the final
residual is read at the positions a sequence asks for. Steering hooks fire on every segment's forward, so a vector
applied at all positions sees the shared prefix steered exactly as a full forward of each sequence would.

Only models whose forward takes `past_key_values` (TL 4 bridges; `models.accepts_kv_cache`) can run a tree.
Memory: a chunk of sequences holds the keys/values of its segments that have children, each dropped once its whole
subtree has run; chunks are cut so that even all of them together stay within `max_cache_bytes` (a single sequence
longer than that runs as its own chunk). A batch also assembles its paths' keys/values, at most its padded
positions times the bytes per token. `measure_tree_memory()` records both peaks.
"""

from __future__ import annotations

import contextvars
import dataclasses
import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from lens_steer.errors import LensSteerError
from lens_steer.models import HookedModel

DEFAULT_CACHE_BYTES = 1 << 30  # keys/values a chunk may hold (its segments with children)
PAD_SLACK = 1.25  # a batch's padded segment positions may exceed its real tokens by this factor (padding is pure waste)
Forward = Callable[[Tensor, dict[str, Any], str], Tensor]  # (tokens, forward kwargs, batch key) -> final residual [batch, pos, d_model]
Logits = Callable[[Tensor], Tensor]  # selected final residuals [n, d_model] -> logits [n, vocab]
Read = tuple[int, Sequence[int]]  # (position whose next-token distribution is read, token ids whose log-probs are kept)


@dataclasses.dataclass
class Segment:
    """Tokens shared by every sequence passing through this node of the tree (a merged unary chain of the trie)."""

    tokens: list[int]
    parent: int  # segment index, -1 at a root
    depth: int
    path_len: int = 0  # tokens of the ancestors (this segment's first absolute position)
    n_children: int = 0
    digest: bytes = b""  # identity of the path from the root through this segment


@dataclasses.dataclass
class PrefixTree:
    """Segments (parents before children) and, per sequence and position, the (segment, offset) holding it."""

    segments: list[Segment]
    where: list[list[tuple[int, int]]]

    @property
    def unique_tokens(self) -> int:
        """Distinct prefix tokens: what the tree runs."""
        return sum(len(s.tokens) for s in self.segments)


def build_tree(seqs: Sequence[Sequence[int]]) -> PrefixTree:
    """The prefix tree of `seqs` (token ids); equal prefixes are equal token ids, whatever the texts were."""
    children: list[dict[int, int]] = [{}]  # trie node 0: the virtual root
    parent, token_of, seg_of, offset_of = [-1], [-1], [-1], [0]
    segments: list[Segment] = []
    where: list[list[tuple[int, int]]] = []
    for seq in seqs:
        if not seq:
            raise LensSteerError("cannot score an empty token sequence")
        cur, path = 0, []
        for tok in seq:
            nxt = children[cur].get(int(tok))
            if nxt is None:
                nxt = len(children)
                children.append({})
                children[cur][int(tok)] = nxt
                parent.append(cur)
                token_of.append(int(tok))
                seg_of.append(-1)
                offset_of.append(0)
            cur = nxt
            path.append(cur)
        where.append(path)  # trie nodes for now
    for node in range(1, len(children)):  # creation order: a node after its parent
        p = parent[node]
        tok = token_of[node]
        if p == 0 or len(children[p]) != 1:
            ps = seg_of[p] if p else -1
            seg_of[node] = len(segments)
            segments.append(Segment([tok], ps, segments[ps].depth + 1 if ps >= 0 else 0))
            if ps >= 0:
                segments[ps].n_children += 1
        else:
            seg_of[node] = seg_of[p]
            offset_of[node] = len(segments[seg_of[p]].tokens)
            segments[seg_of[p]].tokens.append(tok)
    for seg in segments:
        up = segments[seg.parent] if seg.parent >= 0 else None
        seg.path_len = up.path_len + len(up.tokens) if up is not None else 0
        seg.digest = hashlib.sha256((up.digest if up is not None else b"") + np.asarray(seg.tokens, dtype=np.int64).tobytes()).digest()
    located = [[(seg_of[n], offset_of[n]) for n in path] for path in where]
    return PrefixTree(segments, located)


def unique_prefix_tokens(seqs: Sequence[Sequence[int]]) -> int:
    """Distinct prefix tokens of `seqs` (the trie's size): the tokens a prefix tree runs."""
    ordered = sorted(list(s) for s in seqs)
    total, prev = 0, []
    for s in ordered:
        total += len(s) - _common(prev, s)
        prev = s
    return total


def _common(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def kv_bytes_per_token(model: HookedModel) -> int:
    """Bytes of keys and values one token occupies over all blocks (from the model's config)."""
    cfg = model.cfg
    heads = getattr(cfg, "n_key_value_heads", None) or cfg.n_heads
    size = torch.empty(0, dtype=getattr(cfg, "dtype", torch.float32) or torch.float32).element_size()
    return int(cfg.n_layers) * 2 * int(heads) * int(cfg.d_head) * size


@dataclasses.dataclass
class TreeMemory:
    """Bytes of keys/values the tree runs inside `measure_tree_memory()` held: segments stored for their children
    (the prefix cache) and a batch's whole cache (its assembled paths plus its own segments)."""

    peak_held_bytes: int = 0
    peak_batch_bytes: int = 0
    stored_segments: int = 0
    evicted_segments: int = 0
    runs: int = 0


_METER: contextvars.ContextVar[TreeMemory | None] = contextvars.ContextVar("lens_steer_tree_memory", default=None)


@contextmanager
def measure_tree_memory() -> Iterator[TreeMemory]:
    """Within the block, every `run_tree` adds what it held to the yielded meter."""
    meter = TreeMemory()
    token = _METER.set(meter)
    try:
        yield meter
    finally:
        _METER.reset(token)


def _nbytes(pair: tuple[Tensor, Tensor] | None) -> int:
    return 0 if pair is None else sum(t.numel() * t.element_size() for t in pair)


@dataclasses.dataclass(frozen=True)
class TreeBatch:
    """Segments of one level of one chunk's tree run together, and the digest naming that batch."""

    chunk: int
    segments: tuple[int, ...]
    key: str


class TreePlan:
    """The sequences cut into chunks (sorted, so that shared prefixes stay together), each chunk's tree, and the
    batches to run in order: level by level, each batch within `max_batch` segments and `max_tokens` positions
    (path and segment, padded)."""

    def __init__(
        self, seqs: Sequence[Sequence[int]], *, max_batch: int, max_tokens: int, kv_bytes: int, max_cache_bytes: int = DEFAULT_CACHE_BYTES, padding_side: str = "right"
    ) -> None:
        if padding_side not in ("left", "right"):
            raise LensSteerError(f"unknown padding side {padding_side!r}; use left or right")
        self.padding_side = padding_side
        order = sorted(range(len(seqs)), key=lambda i: list(seqs[i]))
        self.chunks: list[list[int]] = []
        current: list[int] = []
        held, prev = 0, []
        for i in order:
            new = len(seqs[i]) - _common(prev, seqs[i])
            if current and (held + new) * kv_bytes > max_cache_bytes:
                self.chunks.append(current)
                current, held, new = [], 0, len(seqs[i])
            current.append(i)
            held += new
            prev = seqs[i]
        if current:
            self.chunks.append(current)
        self.trees = [build_tree([seqs[i] for i in chunk]) for chunk in self.chunks]
        self.batches: list[TreeBatch] = []
        for c, tree in enumerate(self.trees):
            depth = max(s.depth for s in tree.segments)
            for d in range(depth + 1):
                level = sorted((i for i, s in enumerate(tree.segments) if s.depth == d), key=lambda i: (len(tree.segments[i].tokens), tree.segments[i].path_len))
                for group in _groups(level, tree.segments, max_batch, max_tokens):
                    h = hashlib.sha256(padding_side.encode())
                    for i in group:
                        h.update(tree.segments[i].digest)
                    self.batches.append(TreeBatch(c, tuple(group), h.hexdigest()))

    @property
    def unique_tokens(self) -> int:
        """Tokens the plan runs (each chunk's distinct prefixes)."""
        return sum(t.unique_tokens for t in self.trees)


def _groups(level: list[int], segments: list[Segment], max_batch: int, max_tokens: int) -> list[list[int]]:
    """`level` (sorted by segment length) cut into batches within both budgets and with at most `PAD_SLACK`
    times more segment positions (padding included) than real tokens."""
    out: list[list[int]] = []
    current: list[int] = []
    width, real = (0, 0), 0
    for i in level:
        s = segments[i]
        w = (max(width[0], s.path_len), max(width[1], len(s.tokens)))
        n = len(current) + 1
        if current and (n > max_batch or n * (w[0] + w[1]) > max_tokens or n * w[1] > PAD_SLACK * (real + len(s.tokens))):
            out.append(current)
            current, w, real = [], (s.path_len, len(s.tokens)), 0
        current.append(i)
        width = w
        real += len(s.tokens)
    if current:
        out.append(current)
    return out


def run_tree(
    plan: TreePlan,
    seqs: Sequence[Sequence[int]],
    reads: Sequence[Sequence[Read]],
    *,
    forward: Forward,
    logits: Logits,
    n_layers: int,
    first_layer: int = 0,
    pad_id: int = 0,
    device: torch.device | str = "cpu",
    done: Callable[[int], None] | None = None,
) -> list[list[np.ndarray]]:
    """Per sequence, per read: log-probs (full vocabulary) of the read's token ids at its position.

    `forward(tokens, kwargs, key)` returns the final residual of a batch of segments given the keys/values of
    their paths (`kwargs`: `past_key_values`, a transformers cache over blocks `first_layer..n_layers-1`, and the
    joint `attention_mask`). `done(i)` is called once sequence i has all its reads. A segment's stored keys/values
    are dropped as soon as its whole subtree has run."""
    from transformers import DynamicCache

    meter = _METER.get()
    if meter is not None:
        meter.runs += 1
    out: list[list[np.ndarray]] = [[np.empty(0)] * len(r) for r in reads]
    for c, (chunk, tree) in enumerate(zip(plan.chunks, plan.trees)):
        asks: dict[int, list[tuple[int, int, int]]] = {}  # segment -> (offset, chunk row, read index)
        left = [len(reads[i]) for i in chunk]
        for r, i in enumerate(chunk):
            if len(seqs[i]) != len(tree.where[r]):
                raise LensSteerError("the plan was made for other sequences")
            for k, (pos, _) in enumerate(reads[i]):
                seg, off = tree.where[r][pos]
                asks.setdefault(seg, []).append((off, r, k))
        for r, i in enumerate(chunk):
            if not left[r] and done is not None:
                done(i)
        kv: dict[int, list[tuple[Tensor, Tensor] | None]] = {}  # segment -> per block, its own keys/values [heads, len, d_head]
        waiting = [s.n_children for s in tree.segments]  # children of each segment whose subtree has not yet run
        held = 0
        for batch in (b for b in plan.batches if b.chunk == c):
            segs = [tree.segments[i] for i in batch.segments]
            width = max(len(s.tokens) for s in segs)
            tokens = torch.full((len(segs), width), pad_id, dtype=torch.long)
            seg_mask = torch.zeros(len(segs), width, dtype=torch.long)
            cols = []
            for b, s in enumerate(segs):
                start = 0 if plan.padding_side == "right" else width - len(s.tokens)
                tokens[b, start : start + len(s.tokens)] = torch.tensor(s.tokens)
                seg_mask[b, start : start + len(s.tokens)] = 1
                cols.append(start)
            past_len = max(s.path_len for s in segs)
            past_mask = torch.zeros(len(segs), past_len, dtype=torch.long)
            for b, s in enumerate(segs):
                past_mask[b, past_len - s.path_len :] = 1
            cache = DynamicCache(ddp_cache_data=_past(tree, batch.segments, kv, past_len, n_layers, first_layer)) if past_len else DynamicCache()
            mask = torch.cat([past_mask, seg_mask], dim=1).to(device)
            resid: Float[Tensor, "batch pos d_model"] = forward(tokens.to(device), {"past_key_values": cache, "attention_mask": mask}, batch.key)
            for b, (i, s) in enumerate(zip(batch.segments, segs)):
                if s.n_children:
                    lo = past_len + cols[b]
                    kv[i] = [
                        (layer.keys[b, :, lo : lo + len(s.tokens)].clone(), layer.values[b, :, lo : lo + len(s.tokens)].clone()) if l >= first_layer else None
                        for l, layer in enumerate(cache.layers)
                    ]
                    held += sum(map(_nbytes, kv[i]))
            if meter is not None:
                meter.peak_held_bytes = max(meter.peak_held_bytes, held)
                batch_bytes = sum(_nbytes((layer.keys, layer.values)) for l, layer in enumerate(cache.layers) if l >= first_layer)
                meter.peak_batch_bytes = max(meter.peak_batch_bytes, batch_bytes)
                meter.stored_segments += sum(1 for s in segs if s.n_children)
            del cache
            for i, s in zip(batch.segments, segs):  # a segment whose whole subtree has run is no longer needed
                node = i if not s.n_children else -1
                while node >= 0 and not waiting[node]:
                    if node in kv:
                        held -= sum(map(_nbytes, kv.pop(node)))
                        if meter is not None:
                            meter.evicted_segments += 1
                    node = tree.segments[node].parent
                    if node >= 0:
                        waiting[node] -= 1
            wanted = [(b, off, r, k) for b, i in enumerate(batch.segments) for off, r, k in asks.get(i, [])]
            if not wanted:
                continue
            unique = sorted({(b, off) for b, off, _, _ in wanted})
            index = {u: n for n, u in enumerate(unique)}
            rows = torch.tensor([b for b, _ in unique], device=device)
            pos = torch.tensor([cols[b] + off for b, off in unique], device=device)
            logp = torch.log_softmax(logits(resid[rows, pos]), dim=-1)
            picks = [(index[(b, off)], r, k) for b, off, r, k in wanted]
            flat_ids = [int(t) for _, r, k in picks for t in reads[chunk[r]][k][1]]
            flat_rows = [u for u, r, k in picks for _ in reads[chunk[r]][k][1]]
            got = logp[torch.tensor(flat_rows, device=device), torch.tensor(flat_ids, device=device)].cpu().numpy()
            at = 0
            for u, r, k in picks:
                n = len(reads[chunk[r]][k][1])
                out[chunk[r]][k] = got[at : at + n]
                at += n
                left[r] -= 1
                if not left[r] and done is not None:
                    done(chunk[r])
        if kv:
            raise LensSteerError(f"prefix tree kept {len(kv)} segments after their children ran (a bug in the plan)")
    return out


def _past(tree: PrefixTree, segments: Sequence[int], kv: dict[int, list[tuple[Tensor, Tensor] | None]], past_len: int, n_layers: int, first_layer: int) -> list[tuple[Tensor | None, Tensor | None]]:
    """Per block, keys and values `[batch, heads, past_len, d_head]` of each segment's path, left-padded; None below `first_layer`."""
    paths = []
    for i in segments:
        chain, p = [], tree.segments[i].parent
        while p >= 0:
            chain.append(p)
            p = tree.segments[p].parent
        paths.append(chain[::-1])
    data: list[tuple[Tensor | None, Tensor | None]] = []
    for layer in range(n_layers):
        if layer < first_layer:
            data.append((None, None))
            continue
        ref = kv[paths[0][0]][layer]
        assert ref is not None
        heads, d_head = ref[0].shape[0], ref[0].shape[-1]
        keys = ref[0].new_zeros(len(segments), heads, past_len, d_head)
        values = ref[1].new_zeros(len(segments), heads, past_len, d_head)
        for b, chain in enumerate(paths):
            end = past_len
            for p in reversed(chain):
                kl, vl = kv[p][layer]  # type: ignore[misc]
                n = kl.shape[1]
                keys[b, :, end - n : end] = kl
                values[b, :, end - n : end] = vl
                end -= n
        data.append((keys, values))
    return data

