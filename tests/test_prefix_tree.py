"""Tests for lens_steer.prefix_tree: the tree holds every sequence, counts each distinct prefix once, and running it
gives what one full forward of each sequence gives (steered and unsteered, left and right padding, one chunk or
several), on the tiny model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch
from _tiny_models import block1_steering, kv_cache_tiny_llama, single_thread  # noqa: F401 (autouse fixture)

from lens_steer.prefix_tree import TreePlan, build_tree, kv_bytes_per_token, measure_tree_memory, run_tree, unique_prefix_tokens
from lens_steer.scoring import final_residual
from lens_steer.tokens import encode_texts, pad_id

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
        segs = [plan.trees[b.chunk].segments[i] for i in b.segments]
        assert len(segs) <= 4 and len({s.depth for s in segs}) == 1


steering = block1_steering  # the shared seeded vector at block 1


def logits_of(model: Any) -> Any:
    return lambda resid: (model.ln_final(resid) @ model.W_U).float()


@pytest.mark.parametrize("padding_side", ["right", "left"])
@pytest.mark.parametrize("steered", [False, True], ids=["unsteered", "steered"])
@pytest.mark.parametrize("budget", [None, 150], ids=["one-chunk", "chunks"])
def test_running_the_tree_equals_a_full_forward_per_sequence(model: Any, padding_side: str, steered: bool, budget: int | None) -> None:
    seqs = encode_texts(model, TEXTS)
    reads = [[(p, [s[p + 1], 5]) for p in range(len(s) - 1)] + [(len(s) - 1, [3, 4])] for s in seqs]  # every position
    kv = kv_bytes_per_token(model)
    plan = TreePlan(seqs, max_batch=3, max_tokens=400, kv_bytes=kv, max_cache_bytes=kv * (budget or 10**6), padding_side=padding_side)
    assert plan.unique_tokens < sum(map(len, seqs))
    assert (len(plan.chunks) > 1) == (budget is not None)
    finished: list[int] = []
    with steering(model, steered), torch.inference_mode():
        got = run_tree(plan, seqs, reads, forward=lambda t, kw, key: final_residual(model, t, kw), logits=logits_of(model), n_layers=int(model.cfg.n_layers),
                       pad_id=pad_id(model), done=finished.append)  # fmt: skip
        for seq, r, g in zip(seqs, reads, got):
            logp = torch.log_softmax(logits_of(model)(final_residual(model, torch.tensor([seq]), {})[0]), -1)
            for (pos, ids), values in zip(r, g):
                np.testing.assert_allclose(values, logp[pos, ids].numpy(), atol=1e-4, rtol=1e-4)
    assert sorted(finished) == list(range(len(seqs)))


def test_steering_reaches_the_shared_prefix(model: Any) -> None:
    seqs = encode_texts(model, TEXTS[:2])
    reads = [[(len(s) - 1, [3])] for s in seqs]
    out = []
    for steered in (False, True):
        plan = TreePlan(seqs, max_batch=4, max_tokens=400, kv_bytes=kv_bytes_per_token(model))
        with steering(model, steered), torch.inference_mode():
            out.append(run_tree(plan, seqs, reads, forward=lambda t, kw, key: final_residual(model, t, kw), logits=logits_of(model), n_layers=int(model.cfg.n_layers))[0][0])
    assert abs(float(out[0][0] - out[1][0])) > 1e-3


def expected_memory(plan: TreePlan, kv: int) -> tuple[int, int]:
    """Peak bytes of stored segment keys/values and of one batch's cache, worked out from the plan alone: a segment
    with children is stored when its batch runs and dropped once every sequence through it has been read (its last
    descendant leaf has run)."""
    peak_held = peak_batch = 0
    for c, tree in enumerate(plan.trees):
        leaves_below = [0] * len(tree.segments)
        for i, s in enumerate(tree.segments):
            if not s.n_children:
                p = s.parent
                while p >= 0:
                    leaves_below[p] += 1
                    p = tree.segments[p].parent
        held, stored = 0, set()
        for b in (b for b in plan.batches if b.chunk == c):
            segs = [tree.segments[i] for i in b.segments]
            peak_batch = max(peak_batch, len(segs) * (max(s.path_len for s in segs) + max(len(s.tokens) for s in segs)) * kv)
            for i, s in zip(b.segments, segs):
                if s.n_children:
                    held += len(s.tokens) * kv
                    stored.add(i)
            peak_held = max(peak_held, held)
            for s in segs:
                if not s.n_children:
                    p = s.parent
                    while p >= 0:
                        leaves_below[p] -= 1
                        if not leaves_below[p] and p in stored:
                            held -= len(tree.segments[p].tokens) * kv
                            stored.discard(p)
                        p = tree.segments[p].parent
        assert held == 0 and not stored
    return peak_held, peak_batch


@pytest.mark.parametrize("budget", [None, 150], ids=["one-chunk", "chunks"])
def test_the_prefix_cache_stays_within_its_budget_and_is_emptied(model: Any, budget: int | None) -> None:
    seqs = encode_texts(model, TEXTS)
    reads = [[(len(s) - 1, [3])] for s in seqs]
    kv = kv_bytes_per_token(model)
    limit = kv * (budget or 10**6)
    plan = TreePlan(seqs, max_batch=2, max_tokens=400, kv_bytes=kv, max_cache_bytes=limit)
    with measure_tree_memory() as memory, torch.inference_mode():
        run_tree(plan, seqs, reads, forward=lambda t, kw, key: final_residual(model, t, kw), logits=logits_of(model), n_layers=int(model.cfg.n_layers), pad_id=pad_id(model))
    with_children = sum(1 for t in plan.trees for s in t.segments if s.n_children)
    assert memory.runs == 1 and memory.stored_segments == memory.evicted_segments == with_children > 0
    assert (memory.peak_held_bytes, memory.peak_batch_bytes) == expected_memory(plan, kv)
    assert 0 < memory.peak_held_bytes <= limit
    never_dropped = max(sum(len(s.tokens) * kv for s in t.segments if s.n_children) for t in plan.trees)
    assert memory.peak_held_bytes <= never_dropped
