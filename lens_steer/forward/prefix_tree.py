"""A tree of shared token prefixes: each distinct prefix of a set of sequences runs once.

The sequences (each item's prompt, or prompt + option, exactly as tokenised) go into a trie over token ids whose
unary chains are merged into segments (`build_tree`): the shared system prompt and instruction, then a BBQ context
shared by its variants, then each question, then each option. `TreePlan` lays the segments out in rows:

- a segment whose whole subtree has at most `max_row` tokens is a *unit*: its subtree is packed into one row
  (small units of the same parent share a row, up to `row_fill` tokens), parents before children, and the row
  attends through a tree mask (each token sees its own path only) with each token at its path position;
- a larger segment is a *trunk*: it runs alone in its row and its keys/values are kept for the rows below it.

Each row continues the keys/values of its parent's path, left-padded so that the path's real tokens end where the
row starts. Rows run wave by wave (a row after the rows of its path), in batches; the final residual is read at
the positions a sequence asks for. Steering hooks fire on every row's forward, so a vector applied at all
positions sees the shared prefix steered exactly as a full forward of each sequence would. With `max_row=0`
every segment is its own row and a batch passes a 2-D padding mask (the model builds its causal and sliding-window
masks itself): the layout for sliding windows shorter than the sequences, which a packed row's mask cannot express.

Only models whose forward takes `past_key_values` (TL 4 bridges; `models.accepts_kv_cache`) can run a tree.
Memory: a chunk of sequences holds the keys/values of its trunk segments with rows below them, each dropped once
every row that reads it has run; chunks are cut so that even all of a chunk's distinct tokens stay within
`max_cache_bytes` (a single sequence longer than that runs as its own chunk). A batch also assembles its rows'
paths' keys/values, at most its padded positions times the bytes per token. `measure_tree_memory()` records both
peaks.
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
from jaxtyping import Bool, Float
from torch import Tensor

from lens_steer.errors import LensSteerError
from lens_steer.model.load import HookedModel

DEFAULT_CACHE_BYTES = 1 << 30  # keys/values a chunk may hold (its trunk segments)
DEFAULT_ROW_TOKENS = 384  # the largest subtree run whole in one row (larger ones are cut at their trunk)
# units share a row only up to this many tokens: a row's attention costs its width squared, so large units run alone
DEFAULT_ROW_FILL = 128
PAD_SLACK = 1.10  # a batch's padded row positions may exceed its real tokens by this factor (padding is pure waste)
Forward = Callable[
    [Tensor, dict[str, Any], str], Tensor
]  # (tokens, forward kwargs, batch key) -> final residual [batch, pos, d_model]
LogProbs = Callable[[Tensor], Tensor]  # selected final residuals [n, d_model] -> log-probs [n, vocab]
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
        seg.digest = hashlib.sha256(
            (up.digest if up is not None else b"") + np.asarray(seg.tokens, dtype=np.int64).tobytes()
        ).digest()
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
    """Bytes of keys/values the tree runs inside `measure_tree_memory()` held: trunk segments stored for the rows
    below them (the prefix cache) and a batch's whole cache (its assembled paths plus its own rows)."""

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


def tree_mask(segment: Sequence[int], offset: Sequence[int], parents: Sequence[int]) -> Bool[Tensor, "pos pos"]:
    """Who attends to whom among tokens laid out segment by segment (`segment[t]`: the token's segment, `offset[t]`:
    its index there; `parents[s]`: segment s's parent, -1 or a segment outside the layout at a root): a token sees
    the tokens of its own segment up to itself and every token of the segments above it."""
    local = sorted(set(segment))
    index = {s: k for k, s in enumerate(local)}
    above = torch.eye(len(local), dtype=torch.bool)  # [k, j]: segment j is segment k or above it
    for k, s in enumerate(local):  # parents come before their children
        if parents[s] in index:
            above[k] |= above[index[parents[s]]]
    seg = torch.tensor([index[s] for s in segment])
    off = torch.tensor(list(offset))
    same = seg[:, None] == seg[None, :]
    return above[seg[:, None], seg[None, :]] & (~same | (off[None, :] <= off[:, None]))


@dataclasses.dataclass(frozen=True)
class TreeRow:
    """Segments run as one row after the keys/values of `parent`'s path (-1: none): the whole subtrees of one or
    more units (parents before children), or one segment too large to pack (a trunk)."""

    parent: int
    segments: tuple[int, ...]
    stored: bool  # its one segment's keys/values are kept for the rows below it
    width: int  # tokens
    past: int  # tokens of the parent's path
    wave: int  # the depth of its first segment: a row runs after every row of its path


@dataclasses.dataclass(frozen=True)
class TreeBatch:
    """Rows of one wave of one chunk run together, and the digest naming that batch."""

    chunk: int
    rows: tuple[int, ...]
    key: str


def _children(segments: Sequence[Segment]) -> list[list[int]]:
    out: list[list[int]] = [[] for _ in segments]
    for i, s in enumerate(segments):
        if s.parent >= 0:
            out[s.parent].append(i)
    return out


def _subtree(i: int, children: list[list[int]]) -> list[int]:
    """Segment `i` and its descendants, parents before children (depth first)."""
    out, stack = [], [i]
    while stack:
        node = stack.pop()
        out.append(node)
        stack.extend(reversed(children[node]))
    return out


def tree_rows(tree: PrefixTree, max_row: int, row_fill: int = DEFAULT_ROW_FILL) -> list[TreeRow]:
    """`tree`'s segments laid out in rows: units (subtrees of at most `max_row` tokens) packed first-fit by size
    into rows of at most `row_fill` tokens per parent (a larger unit alone), every other segment a trunk row of
    its own."""
    segs = tree.segments
    children = _children(segs)
    size = [len(s.tokens) for s in segs]
    for i in reversed(range(len(segs))):  # children come after their parents
        if segs[i].parent >= 0:
            size[segs[i].parent] += size[i]
    rows: list[TreeRow] = []
    units: dict[int, list[int]] = {}
    stack = [i for i, s in enumerate(segs) if s.parent < 0][::-1]
    while stack:
        i = stack.pop()
        s = segs[i]
        if size[i] <= max_row:
            units.setdefault(s.parent, []).append(i)
            continue
        rows.append(TreeRow(s.parent, (i,), bool(children[i]), len(s.tokens), s.path_len, s.depth))
        stack.extend(reversed(children[i]))
    for parent, roots in units.items():
        bins: list[tuple[int, list[int]]] = []  # (tokens, unit roots): first fit, largest unit first
        for u in sorted(roots, key=lambda u: (-size[u], u)):
            for b, (used, members) in enumerate(bins):
                if used + size[u] <= row_fill:
                    bins[b] = (used + size[u], members + [u])
                    break
            else:
                bins.append((size[u], [u]))
        for used, members in bins:
            first = segs[members[0]]
            rows.append(
                TreeRow(
                    parent,
                    tuple(x for u in members for x in _subtree(u, children)),
                    False,
                    used,
                    first.path_len,
                    first.depth,
                )
            )
    return rows


class TreePlan:
    """The sequences cut into chunks (sorted, so that shared prefixes stay together), each chunk's tree and rows, and
    the batches to run in order: wave by wave, each batch within `max_batch` rows and `max_tokens` positions (path
    and row, padded)."""

    def __init__(
        self,
        seqs: Sequence[Sequence[int]],
        *,
        max_batch: int,
        max_tokens: int,
        kv_bytes: int,
        max_cache_bytes: int = DEFAULT_CACHE_BYTES,
        padding_side: str = "right",
        max_row: int = DEFAULT_ROW_TOKENS,
        row_fill: int = DEFAULT_ROW_FILL,
    ) -> None:
        if padding_side not in ("left", "right"):
            raise LensSteerError(f"unknown padding side {padding_side!r}; use left or right")
        if max_row < 0:
            raise LensSteerError(f"a packed row needs max_row >= 0 tokens, got {max_row}")
        self.padding_side = padding_side
        self.packed = max_row > 0
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
        self.rows = [tree_rows(tree, max_row, row_fill) for tree in self.trees]
        self.batches: list[TreeBatch] = []
        for c, (tree, rows) in enumerate(zip(self.trees, self.rows)):
            for wave in sorted({r.wave for r in rows}):
                level = sorted(
                    (i for i, r in enumerate(rows) if r.wave == wave), key=lambda i: (rows[i].width, rows[i].past)
                )
                for group in _groups(level, rows, max_batch, max_tokens):
                    h = hashlib.sha256(f"{padding_side} {self.packed}".encode())
                    for i in group:
                        h.update(b"|")
                        for s in rows[i].segments:
                            h.update(tree.segments[s].digest)
                    self.batches.append(TreeBatch(c, tuple(group), h.hexdigest()))

    @property
    def unique_tokens(self) -> int:
        """Tokens the plan runs (each chunk's distinct prefixes)."""
        return sum(t.unique_tokens for t in self.trees)

    @property
    def padded_tokens(self) -> int:
        """Row positions the plan's batches run, padding included (paths read from the cache not counted)."""
        return sum(len(b.rows) * max(self.rows[b.chunk][r].width for r in b.rows) for b in self.batches)


def _groups(level: list[int], rows: list[TreeRow], max_batch: int, max_tokens: int) -> list[list[int]]:
    """`level` (sorted by row width) cut into batches within both budgets and with at most `PAD_SLACK` times more
    row positions (padding included) than real tokens."""
    out: list[list[int]] = []
    current: list[int] = []
    width, real = (0, 0), 0
    for i in level:
        r = rows[i]
        w = (max(width[0], r.past), max(width[1], r.width))
        n = len(current) + 1
        if current and (n > max_batch or n * (w[0] + w[1]) > max_tokens or n * w[1] > PAD_SLACK * (real + r.width)):
            out.append(current)
            current, w, real = [], (r.past, r.width), 0
        current.append(i)
        width = w
        real += r.width
    if current:
        out.append(current)
    return out


def _path(tree: PrefixTree, segment: int) -> list[int]:
    """`segment` and its ancestors, root first ([] for -1)."""
    chain = []
    while segment >= 0:
        chain.append(segment)
        segment = tree.segments[segment].parent
    return chain[::-1]


@dataclasses.dataclass
class _BatchInputs:
    tokens: Tensor  # [batch, width]
    positions: Tensor  # [batch, width]: each token's position in its sequence
    mask: Tensor  # packed: [batch, 1, width, past + width] bool; else [batch, past + width] 0/1
    starts: list[int]  # each row's first column
    columns: list[dict[int, int]]  # per row: segment -> its first column in the row


def _batch_inputs(
    plan: TreePlan, tree: PrefixTree, rows: Sequence[TreeRow], past_len: int, pad_id: int
) -> _BatchInputs:
    """Tokens, positions and attention mask of a batch of rows whose paths fill the last columns of `past_len`."""
    width = max(r.width for r in rows)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(rows), width), dtype=torch.long)
    if plan.packed:
        mask = torch.zeros((len(rows), 1, width, past_len + width), dtype=torch.bool)
        mask[:, 0, torch.arange(width), past_len + torch.arange(width)] = True  # padding sees only itself
    else:
        mask = torch.zeros((len(rows), past_len + width), dtype=torch.long)
    starts, columns = [], []
    for b, row in enumerate(rows):
        start = 0 if plan.padding_side == "right" else width - row.width
        cols: dict[int, int] = {}
        offsets: list[int] = []  # per token, its index in its segment
        at = start
        for s in row.segments:
            seg = tree.segments[s]
            cols[s] = at
            tokens[b, at : at + len(seg.tokens)] = torch.tensor(seg.tokens)
            positions[b, at : at + len(seg.tokens)] = torch.arange(seg.path_len, seg.path_len + len(seg.tokens))
            offsets += range(len(seg.tokens))
            at += len(seg.tokens)
        starts.append(start)
        columns.append(cols)
        if not plan.packed:
            mask[b, past_len - row.past : past_len] = 1
            mask[b, past_len + start : past_len + start + row.width] = 1
            continue
        sees = tree_mask(
            [s for s in row.segments for _ in tree.segments[s].tokens], offsets, [s.parent for s in tree.segments]
        )
        real = slice(start, start + row.width)
        mask[b, 0, real, past_len + start : past_len + start + row.width] = sees
        mask[b, 0, real, past_len - row.past : past_len] = True
    return _BatchInputs(tokens, positions, mask, starts, columns)


def run_tree(
    plan: TreePlan,
    seqs: Sequence[Sequence[int]],
    reads: Sequence[Sequence[Read]],
    *,
    forward: Forward,
    log_probs: LogProbs,
    n_layers: int,
    first_layer: int = 0,
    pad_id: int = 0,
    device: torch.device | str = "cpu",
    done: Callable[[int], None] | None = None,
) -> list[list[np.ndarray]]:
    """Per sequence, per read: log-probs (full vocabulary, `log_probs` of the final residual) of the read's token
    ids at its position.

    `forward(tokens, kwargs, key)` returns the final residual of a batch of rows given the keys/values of their
    paths (`kwargs`: `past_key_values`, a transformers cache over blocks `first_layer..n_layers-1`, the joint
    `attention_mask` and `position_ids`). `done(i)` is called once sequence i has all its reads. A trunk
    segment's stored keys/values are dropped as soon as every row reading them has run."""
    from transformers import DynamicCache

    meter = _METER.get()
    if meter is not None:
        meter.runs += 1
    out: list[list[np.ndarray]] = [[np.empty(0)] * len(r) for r in reads]
    for c, (chunk, tree, rows) in enumerate(zip(plan.chunks, plan.trees, plan.rows)):
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
        paths = [_path(tree, row.parent) for row in rows]
        readers = [0] * len(tree.segments)  # rows still to run whose path holds each segment
        for path in paths:
            for s in path:
                readers[s] += 1
        kv: dict[
            int, list[tuple[Tensor, Tensor] | None]
        ] = {}  # trunk segment -> per block, its keys/values [heads, len, d_head]
        held = 0
        for batch in (b for b in plan.batches if b.chunk == c):
            batch_rows = [rows[i] for i in batch.rows]
            past_len = max(r.past for r in batch_rows)
            inputs = _batch_inputs(plan, tree, batch_rows, past_len, pad_id)
            cache = (
                DynamicCache(ddp_cache_data=_past([paths[i] for i in batch.rows], kv, past_len, n_layers, first_layer))
                if past_len
                else DynamicCache()
            )
            kwargs = {
                "past_key_values": cache,
                "attention_mask": inputs.mask.to(device),
                "position_ids": inputs.positions.to(device),
            }
            resid: Float[Tensor, "batch pos d_model"] = forward(inputs.tokens.to(device), kwargs, batch.key)
            for b, row in enumerate(batch_rows):
                s = row.segments[0]
                if row.stored and readers[s]:
                    lo = past_len + inputs.starts[b]
                    kv[s] = [
                        (layer.keys[b, :, lo : lo + row.width].clone(), layer.values[b, :, lo : lo + row.width].clone())
                        if l >= first_layer
                        else None
                        for l, layer in enumerate(cache.layers)  # noqa: E741
                    ]
                    held += sum(map(_nbytes, kv[s]))
                    if meter is not None:
                        meter.stored_segments += 1
            if meter is not None:
                meter.peak_held_bytes = max(meter.peak_held_bytes, held)
                batch_bytes = sum(
                    _nbytes((layer.keys, layer.values))
                    for l, layer in enumerate(cache.layers)  # noqa: E741
                    if l >= first_layer
                )
                meter.peak_batch_bytes = max(meter.peak_batch_bytes, batch_bytes)
            del cache, kwargs
            for i in batch.rows:  # a trunk segment no row still needs is dropped
                for s in paths[i]:
                    readers[s] -= 1
                    if not readers[s] and s in kv:
                        held -= sum(map(_nbytes, kv.pop(s)))
                        if meter is not None:
                            meter.evicted_segments += 1
            wanted = [
                (b, inputs.columns[b][s] + off, r, k)
                for b, row in enumerate(batch_rows)
                for s in row.segments
                for off, r, k in asks.get(s, [])
            ]
            if not wanted:
                continue
            unique = sorted({(b, col) for b, col, _, _ in wanted})
            index = {u: n for n, u in enumerate(unique)}
            sel_rows = torch.tensor([b for b, _ in unique], device=device)
            sel_cols = torch.tensor([col for _, col in unique], device=device)
            logp = log_probs(resid[sel_rows, sel_cols])
            picks = [(index[(b, col)], r, k) for b, col, r, k in wanted]
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
            raise LensSteerError(f"prefix tree kept {len(kv)} segments after their rows ran (a bug in the plan)")
    return out


def _past(
    paths: Sequence[Sequence[int]],
    kv: dict[int, list[tuple[Tensor, Tensor] | None]],
    past_len: int,
    n_layers: int,
    first_layer: int,
) -> list[tuple[Tensor | None, Tensor | None]]:
    """Per block, keys and values `[batch, heads, past_len, d_head]` of each row's path, left-padded; None below
    `first_layer`."""
    ref_segment = next(p[0] for p in paths if p)
    data: list[tuple[Tensor | None, Tensor | None]] = []
    for layer in range(n_layers):
        if layer < first_layer:
            data.append((None, None))
            continue
        ref = kv[ref_segment][layer]
        assert ref is not None
        heads, d_head = ref[0].shape[0], ref[0].shape[-1]
        keys = ref[0].new_zeros(len(paths), heads, past_len, d_head)
        values = ref[1].new_zeros(len(paths), heads, past_len, d_head)
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
