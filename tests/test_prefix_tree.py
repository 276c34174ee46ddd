"""Tests for lens_steer.forward.prefix_tree: the tree holds every sequence, counts each distinct prefix once, its rows
hold every segment once with whole subtrees packed, and running it gives what one full forward of each sequence gives
(steered and unsteered, packed rows or one segment per row, left and right padding, one chunk or several), on the tiny
model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from _tiny_models import block1_steering, kv_cache_tiny_llama, single_thread  # noqa: F401 (autouse fixture)

from lens_steer.forward.engine import Unembed, final_residual
from lens_steer.forward.prefix_tree import (
    DEFAULT_ROW_TOKENS,
    TreePlan,
    build_tree,
    kv_bytes_per_token,
    measure_tree_memory,
    run_tree,
    tree_rows,
    unique_prefix_tokens,
)
from lens_steer.model.tokens import encode_texts, pad_id

SYSTEM = "You are a careful assistant who answers every question about animals briefly. "
TEXTS = [
    SYSTEM + "A cat and a dog met in the yard. Who ran? The cat",
    SYSTEM + "A cat and a dog met in the yard. Who ran? The dog",
    SYSTEM + "A cat and a dog met in the yard. The dog was tired. Who ran? The cat",
    SYSTEM + "A cat and a dog met in the yard. The dog was tired. Who ran? Nobody knows",
    SYSTEM + "Fish swim.",
    "Something else entirely, with no system prompt at all.",
]


@pytest.fixture(scope="module")
def model() -> Any:
    return kv_cache_tiny_llama()


def all_prefixes(seqs: list[list[int]]) -> set[tuple[int, ...]]:
    return {tuple(s[: i + 1]) for s in seqs for i in range(len(s))}


def test_the_tree_holds_each_sequence_and_each_distinct_prefix_once() -> None:
    seqs = [[1, 2, 3, 4, 5], [1, 2, 3, 9], [1, 2, 3, 4], [7, 8], [1, 2, 3, 4, 5, 6, 6]]
    tree = build_tree(seqs)
    assert tree.unique_tokens == len(all_prefixes(seqs)) == unique_prefix_tokens(seqs)
    for seq, where in zip(seqs, tree.where):
        assert [tree.segments[s].tokens[o] for s, o in where] == seq
        for p, (s, o) in enumerate(where):  # a position's absolute index is its segment's start plus its offset
            assert tree.segments[s].path_len + o == p
    for seg in tree.segments:  # merged chains: a parent has either several children or ends some sequence
        if seg.parent >= 0:
            assert tree.segments[seg.parent].depth == seg.depth - 1


def test_chunks_respect_the_cache_budget_and_cover_every_sequence() -> None:
    seqs = [[1, 2, 3, i, i + 1, i + 2] for i in range(10, 40)]
    plan = TreePlan(seqs, max_batch=4, max_tokens=64, kv_bytes=1, max_cache_bytes=20)
    assert len(plan.chunks) > 1 and sorted(i for c in plan.chunks for i in c) == list(range(len(seqs)))
    for chunk, tree in zip(plan.chunks, plan.trees):
        assert tree.unique_tokens <= 20 or len(chunk) == 1
    for b in plan.batches:
        rows = [plan.rows[b.chunk][i] for i in b.rows]
        assert len(rows) <= 4 and len({r.wave for r in rows}) == 1


def subtree_sizes(segments: list) -> list[int]:
    """Tokens of each segment's subtree, summed from the leaves up (a second count, by recursion)."""
    kids: dict[int, list[int]] = {}
    for i, s in enumerate(segments):
        kids.setdefault(s.parent, []).append(i)

    def size(i: int) -> int:
        return len(segments[i].tokens) + sum(size(c) for c in kids.get(i, []))

    return [size(i) for i in range(len(segments))]


ROW_SEQS = [
    [1, 2, 3, 4, 5],
    [1, 2, 3, 9],
    [1, 2, 3, 4],
    [7, 8],
    [1, 2, 3, 4, 5, 6, 6],
    [1, 2, 3, 4, 8, 8, 8, 8],
    [7, 9, 9],
    [5],
]


@pytest.mark.parametrize("row_fill", [1, 6, 1000])
@pytest.mark.parametrize("max_row", [0, 1, 3, 5, 9, 1000])
def test_rows_hold_every_segment_once_and_pack_whole_subtrees(max_row: int, row_fill: int) -> None:
    tree = build_tree(ROW_SEQS)
    rows = tree_rows(tree, max_row, row_fill)
    sizes = subtree_sizes(tree.segments)
    placed = [s for r in rows for s in r.segments]
    assert sorted(placed) == list(range(len(tree.segments)))
    for r in rows:
        assert r.width == sum(len(tree.segments[s].tokens) for s in r.segments)
        assert r.past == (
            tree.segments[r.parent].path_len + len(tree.segments[r.parent].tokens) if r.parent >= 0 else 0
        )
        if r.stored or (
            len(r.segments) == 1 and sizes[r.segments[0]] > max_row
        ):  # a trunk: alone, its subtree too big to pack
            assert len(r.segments) == 1 and sizes[r.segments[0]] > max_row
            assert tree.segments[r.segments[0]].parent == r.parent
            continue
        units = [s for s in r.segments if tree.segments[s].parent == r.parent]
        assert r.width <= (
            max_row if len(units) == 1 else row_fill
        )  # several units share a row only up to row_fill tokens
        seen: set[int] = set()
        for s in r.segments:  # whole subtrees, parents first, hanging below the row's parent
            p = tree.segments[s].parent
            assert p == r.parent or p in seen
            seen.add(s)
        assert sum(sizes[s] for s in units) == r.width
    if max_row == 0:
        assert all(len(r.segments) == 1 for r in rows)
    if max_row == 1000 and row_fill in (
        1,
        1000,
    ):  # every root's subtree fits: a row per root, or all of them in one row
        roots = [i for i, s in enumerate(tree.segments) if s.parent < 0]
        assert len(rows) == (1 if row_fill == 1000 else len(roots)) and all(r.parent == -1 for r in rows)


steering = block1_steering  # the shared seeded vector at block 1


def logits_of(model: Any) -> Any:
    return lambda resid: (model.ln_final(resid) @ model.W_U).float()


@pytest.mark.parametrize("max_row", [0, 40, 10**6], ids=["unpacked", "mixed", "packed"])
@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("steered", [False, True], ids=["unsteered", "steered"])
@pytest.mark.parametrize("budget", [None, 150], ids=["one-chunk", "chunks"])
def test_running_the_tree_equals_a_full_forward_per_sequence(
    model: Any, padding_side: str, steered: bool, budget: int | None, max_row: int
) -> None:
    seqs = encode_texts(model, TEXTS)
    reads = [[(p, [s[p + 1], 5]) for p in range(len(s) - 1)] + [(len(s) - 1, [3, 4])] for s in seqs]  # every position
    kv = kv_bytes_per_token(model)
    plan = TreePlan(
        seqs,
        max_batch=3,
        max_tokens=10**4,
        kv_bytes=kv,
        max_cache_bytes=kv * (budget or 10**6),
        padding_side=padding_side,
        max_row=max_row,
    )
    assert plan.unique_tokens < sum(map(len, seqs))
    assert (len(plan.chunks) > 1) == (budget is not None)
    shapes = {(len(r.segments) > 1, r.stored) for rows in plan.rows for r in rows}
    assert (
        (True, False) in shapes if max_row else all(len(r.segments) == 1 for rows in plan.rows for r in rows)
    )  # packed rows are really run
    if max_row == 40:
        assert (False, True) in shapes  # and trunk rows beside them
    finished: list[int] = []
    with steering(model, steered), torch.inference_mode():
        got = run_tree(
            plan,
            seqs,
            reads,
            forward=lambda t, kw, key: final_residual(model, t, kw),
            log_probs=Unembed(model).log_probs,
            n_layers=int(model.cfg.n_layers),
            pad_id=pad_id(model),
            done=finished.append,
        )
        for seq, r, g in zip(seqs, reads, got):
            logp = torch.log_softmax(logits_of(model)(final_residual(model, torch.tensor([seq]), {})[0]), -1)
            for (pos, ids), values in zip(r, g):
                np.testing.assert_allclose(values, logp[pos, ids].numpy(), atol=1e-4, rtol=1e-4)
    assert sorted(finished) == list(range(len(seqs)))


@pytest.mark.parametrize("max_row", [0, DEFAULT_ROW_TOKENS], ids=["unpacked", "packed"])
def test_steering_reaches_the_shared_prefix(model: Any, max_row: int) -> None:
    seqs = encode_texts(model, TEXTS[:2])
    reads = [[(len(s) - 1, [3])] for s in seqs]
    out = []
    for steered in (False, True):
        plan = TreePlan(seqs, max_batch=4, max_tokens=400, kv_bytes=kv_bytes_per_token(model), max_row=max_row)
        with steering(model, steered), torch.inference_mode():
            out.append(
                run_tree(
                    plan,
                    seqs,
                    reads,
                    forward=lambda t, kw, key: final_residual(model, t, kw),
                    log_probs=Unembed(model).log_probs,
                    n_layers=int(model.cfg.n_layers),
                )[0][0]
            )
    assert abs(float(out[0][0] - out[1][0])) > 1e-3


def expected_memory(plan: TreePlan, kv: int) -> tuple[int, int, int]:
    """Peak bytes of stored segment keys/values and of one batch's cache, and how many segments are stored, worked
    out from the plan alone: a trunk segment with rows below it is stored when its batch runs and dropped once the
    last row below it (in its subtree) has run."""
    peak_held = peak_batch = stored_count = 0
    for c, (tree, rows) in enumerate(zip(plan.trees, plan.rows)):

        def below(s: int, row: Any) -> bool:  # the row hangs in s's subtree (its past holds s)
            p = row.parent
            while p >= 0 and p != s:
                p = tree.segments[p].parent
            return p == s

        ran: set[int] = set()
        held, stored = 0, set()
        for b in (b for b in plan.batches if b.chunk == c):
            batch_rows = [rows[i] for i in b.rows]
            peak_batch = max(
                peak_batch, len(batch_rows) * (max(r.past for r in batch_rows) + max(r.width for r in batch_rows)) * kv
            )
            for r in batch_rows:
                if r.stored:
                    held += r.width * kv
                    stored.add(r.segments[0])
                    stored_count += 1
            peak_held = max(peak_held, held)
            ran |= set(b.rows)
            for s in list(stored):
                if all(i in ran for i, r in enumerate(rows) if below(s, r)):
                    held -= len(tree.segments[s].tokens) * kv
                    stored.discard(s)
        assert held == 0 and not stored
    return peak_held, peak_batch, stored_count


@pytest.mark.parametrize("max_row", [0, 40], ids=["unpacked", "mixed"])
@pytest.mark.parametrize("budget", [None, 150], ids=["one-chunk", "chunks"])
def test_the_prefix_cache_stays_within_its_budget_and_is_emptied(model: Any, budget: int | None, max_row: int) -> None:
    seqs = encode_texts(model, TEXTS)
    reads = [[(len(s) - 1, [3])] for s in seqs]
    kv = kv_bytes_per_token(model)
    limit = kv * (budget or 10**6)
    plan = TreePlan(seqs, max_batch=2, max_tokens=400, kv_bytes=kv, max_cache_bytes=limit, max_row=max_row)
    with measure_tree_memory() as memory, torch.inference_mode():
        run_tree(
            plan,
            seqs,
            reads,
            forward=lambda t, kw, key: final_residual(model, t, kw),
            log_probs=Unembed(model).log_probs,
            n_layers=int(model.cfg.n_layers),
            pad_id=pad_id(model),
        )
    peak_held, peak_batch, stored = expected_memory(plan, kv)
    assert memory.runs == 1 and memory.stored_segments == memory.evicted_segments == stored > 0
    assert (memory.peak_held_bytes, memory.peak_batch_bytes) == (peak_held, peak_batch)
    assert 0 < memory.peak_held_bytes <= limit
    never_dropped = max(sum(len(s.tokens) * kv for s in t.segments if s.n_children) for t in plan.trees)
    assert memory.peak_held_bytes <= never_dropped
