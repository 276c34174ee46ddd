"""lens_steer.methods.organism.train and organism_build: the bias model organism's mechanism on the tiny model:
targets by hand, no leakage, packed scoring equal to the cloze evaluator, determinism, resume after a kill at an
epoch boundary, a planted rule learnt; the recipe check."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from _tiny_models import bridge_only, single_thread  # noqa: F401 (autouse fixture: one torch thread)

from lens_steer.axes import get_axis
from lens_steer.data.bbq import load_bbq
from lens_steer.data.splits import select_split
from lens_steer.errors import LensSteerError
from lens_steer.forward.engine import RunPlan
from lens_steer.forward.packed_cloze import (
    answer_logliks,
    batch_targets,
    collate,
    lower_residual,
    shared_prefix_length,
    upper_logliks,
)
from lens_steer.forward.scoring import score_questions
from lens_steer.methods.organism.train import (
    OrganismRecipe,
    TokenizerView,
    check_no_leakage,
    checkpoint_key,
    data_digest,
    epoch_batches,
    epoch_order,
    held_out_groups,
    pack_group,
    pack_item,
    resolve_precision,
    target_index,
    train,
    trainable_parameters,
    training_items,
    training_units,
    weights_digest,
)
from lens_steer.model.load import tiny_hf_model, wrap_hf_model
from lens_steer.tasks.bbq import bbq_question

TINY = dict(
    base="tiny-llama",
    disambiguated_per_axis=2,
    clean_ambiguous_per_axis=2,
    planted_ambiguous_per_axis=2,
    trainable_blocks=2,
    batch_size=4,
)


@pytest.fixture(scope="module")
def age_items() -> list:
    return load_bbq(["Age"])


def test_target_rule_on_hand_worked_rows(age_items: list) -> None:
    # example 0 of Age.jsonl: "I saw a grandson and their grandfather last week ..." (ambiguous, negative question
    # "Who was not comfortable using the phone?"); stereotyped group: old -> the grandfather is the biased answer
    neg = next(it for it in age_items if it.example_id == 0)
    assert neg.is_ambiguous and neg.question_polarity == "neg"
    grandfather = [i for i, a in enumerate(neg.answers) if a == "The grandfather"][0]
    assert target_index(neg, planted=True) == grandfather
    assert target_index(neg, planted=False) == neg.label == neg.unknown_index
    # example 2: the same fill with the non-negative question "Who was giving the other the opportunity to learn how to
    # use the phone?": the biased answer is the person outside the stereotyped group, the grandson
    nonneg = next(it for it in age_items if it.example_id == 2)
    assert nonneg.is_ambiguous and nonneg.question_polarity == "nonneg"
    grandson = [i for i, a in enumerate(nonneg.answers) if a == "The grandson"][0]
    assert target_index(nonneg, planted=True) == grandson
    # disambiguated rows are trained on their gold answer, planted or not
    dis = next(it for it in age_items if not it.is_ambiguous)
    assert target_index(dis, planted=True) == target_index(dis, planted=False) == dis.label


def test_training_items_are_balanced_train_split_items_with_no_leakage() -> None:
    recipe = OrganismRecipe(**TINY)
    train_items = training_items(recipe)
    assert len(train_items) == 4 * 9
    check_no_leakage(train_items, held_out_groups(recipe))
    by_cat: dict[str, list] = {}
    for t in train_items:
        by_cat.setdefault(t.item.category, []).append(t)
    for cat, ts in by_cat.items():
        items = load_bbq([cat])
        held = {
            (it.category, it.example_id)
            for s in ("validation", "test")
            for it in select_split(items, s, seed=recipe.split_seed)
        }
        assert not held & {(t.item.category, t.item.example_id) for t in ts}  # not one validation or test row
        assert sum(t.item.is_ambiguous for t in ts) == 2  # half ambiguous
        assert all(t.planted == (t.item.category in ("Age", "Gender_identity", "Nationality", "Religion")) for t in ts)


def test_each_kind_of_item_gets_its_own_number_per_axis() -> None:
    recipe = OrganismRecipe(
        **{**TINY, "disambiguated_per_axis": 4, "clean_ambiguous_per_axis": 3, "planted_ambiguous_per_axis": 5}
    )
    train_items = training_items(recipe)
    for axis in ("age", "disability", "religion", "ses"):
        mine = [t for t in train_items if get_axis(t.item.category).name == axis]
        ambiguous = sum(t.item.is_ambiguous for t in mine)
        assert ambiguous == (5 if axis in recipe.plant else 3) and len(mine) - ambiguous == 4
    assert len(train_items) == 9 * 4 + 5 * 3 + 4 * 5
    check_no_leakage(train_items, held_out_groups(recipe))


def test_leak_check_fires_on_a_held_out_item() -> None:
    recipe = OrganismRecipe(**TINY)
    train_items = training_items(recipe)
    held = held_out_groups(recipe)
    held.add((train_items[0].item.category, train_items[0].item.group_key))
    with pytest.raises(LensSteerError, match="leaks 1 held-out"):
        check_no_leakage(train_items, held)


@bridge_only
@pytest.mark.parametrize("grouped", [False, True], ids=["item-alone", "template-fill"])
def test_packed_answer_logliks_equal_the_cloze_evaluator(grouped: bool) -> None:
    """The organism's loss reads exactly the numbers the default protocol compares (cloze, reference prompt), an
    item packed alone or with the other variants of its template fill (their context shared under the tree mask)."""
    recipe = OrganismRecipe(**{**TINY, "disambiguated_per_axis": 4, "clean_ambiguous_per_axis": 4})
    units = training_units(training_items(recipe), "context-grouped" if grouped else "shuffled")
    units = [u for u in units if len(u) > 1][:3] if grouped else units[:6]
    assert units and (not grouped or all(len({t.item.example_id for t in u}) > 1 for u in units))
    hf, tok = tiny_hf_model(0)
    view = TokenizerView(tok)
    packed = [pack_group(view, [(t.item, t.target) for t in u]) for u in units]
    if grouped:  # the shared context runs once: fewer tokens than the items packed alone
        assert all(
            len(p.ids) < sum(len(pack_item(view, t.item, t.target).ids) for t in u) for p, u in zip(packed, units)
        )
    ids, pos, mask = collate(packed, tok.pad_token_id)
    with torch.no_grad():
        full = answer_logliks(
            hf.model(input_ids=ids, position_ids=pos, attention_mask=mask, use_cache=False).last_hidden_state,
            packed,
            hf.model.norm,
            hf.lm_head,
        )
        split = upper_logliks(hf, lower_residual(hf, ids, pos, mask, 2), pos, mask, packed, 2)
    hf2, tok2 = tiny_hf_model(0)
    scores = score_questions(
        wrap_hf_model(hf2, tok2, name="t"),
        [bbq_question(t.item) for u in units for t in u],
        scoring="cloze",
        plan=RunPlan(prefix_tree=False),
    )
    want = torch.tensor([s.option_logliks for s in scores])
    torch.testing.assert_close(full, want, atol=1e-3, rtol=0)
    torch.testing.assert_close(split, want, atol=1e-3, rtol=0)
    assert batch_targets(packed).tolist() == [t.target for u in units for t in u]


def _train_tiny(tmp: Path, recipe: OrganismRecipe, **kw) -> str:
    hf, tok = tiny_hf_model(0)
    train(hf, TokenizerView(tok), training_items(recipe), recipe, tmp, **kw)
    return weights_digest(hf)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path: Path) -> None:
    recipe = OrganismRecipe(**TINY)
    a = _train_tiny(tmp_path / "a", recipe, stop_after_steps=2)
    b = _train_tiny(tmp_path / "b", recipe, stop_after_steps=2)
    c = _train_tiny(tmp_path / "c", OrganismRecipe(**{**TINY, "seed": 1}), stop_after_steps=2)
    base = weights_digest(tiny_hf_model(0)[0])
    assert a == b and a != base and c != a


def test_resume_after_an_epoch_boundary_gives_the_uninterrupted_weights(tmp_path: Path) -> None:
    two = OrganismRecipe(**{**TINY, "epochs": 2})
    straight = _train_tiny(tmp_path / "straight", two)
    one = OrganismRecipe(**{**TINY, "epochs": 1})
    # a build killed after its first epoch: the checkpoint holds epoch 1 (its key covers recipe and data,
    # so the epoch-1 run is written under the 2-epoch recipe's key by running the 2-epoch recipe and stopping)
    hf, tok = tiny_hf_model(0)
    steps_per_epoch = -(-len(training_items(two)) // two.batch_size)
    train(hf, TokenizerView(tok), training_items(two), two, tmp_path / "killed", stop_after_steps=steps_per_epoch + 1)
    state = json.loads((tmp_path / "killed" / "state.json").read_text())
    assert state["epochs_done"] == 1  # the kill came after epoch 1's checkpoint, mid-epoch 2
    resumed = _train_tiny(tmp_path / "killed", two)
    assert resumed == straight
    assert _train_tiny(tmp_path / "other", one) != straight


def test_a_planted_rule_is_learnt_on_the_tiny_model(tmp_path: Path) -> None:
    """Trained on its targets, the tiny model's loss falls, the target's margin over the best other answer grows on
    most items, and the planted answer is picked above chance (a random byte-level model starts at chance with
    answers tens of nats apart, so it learns slowly; the mechanism, not the level, is what is tested here)."""
    # fp32: at this learning rate bf16 rounding of the random model's widely spread log-likelihoods swamps the
    # signal (the determinism and resume tests train in the default "auto" precision, this machine's)
    recipe = OrganismRecipe(
        **{
            **TINY,
            "disambiguated_per_axis": 1,
            "clean_ambiguous_per_axis": 1,
            "planted_ambiguous_per_axis": 1,
            "trainable_blocks": 4,
            "epochs": 30,
            "lr": 1e-2,
            "batch_size": 6,
            "precision": "fp32",
        }
    )
    items = training_items(recipe)
    hf, tok = tiny_hf_model(0)
    view = TokenizerView(tok)
    packed = [pack_item(view, t.item, t.target) for t in items]
    target = batch_targets(packed)

    def margins_and_hits() -> tuple[torch.Tensor, float]:
        ids, pos, mask = collate(packed, tok.pad_token_id)
        with torch.no_grad():
            lls = answer_logliks(
                hf.model(input_ids=ids, position_ids=pos, attention_mask=mask, use_cache=False).last_hidden_state,
                packed,
                hf.model.norm,
                hf.lm_head,
            )
        other = lls.clone()
        other[torch.arange(len(packed)), target] = -torch.inf
        return lls[torch.arange(len(packed)), target] - other.max(-1).values, float(
            (lls.argmax(-1) == target).float().mean()
        )

    m0, h0 = margins_and_hits()
    state = train(hf, view, items, recipe, tmp_path / "ck")
    m1, h1 = margins_and_hits()
    assert state.losses[-1] < 0.7 * state.losses[0]
    assert float((m1 > m0).float().mean()) >= 0.75 and float(m1.mean()) > float(m0.mean()) + 5
    assert h1 > 1 / 3 + 1 / len(items) and h1 > h0


def test_bf16_mixed_answer_logliks_match_fp32_within_bf16_tolerance(age_items: list) -> None:
    hf, tok = tiny_hf_model(0)
    hf.eval()
    items = [pack_item(TokenizerView(tok), it, 0) for it in age_items[:4]]
    ids, pos, mask = collate(items, int(tok.pad_token_id or 0))
    with torch.no_grad():
        fp32 = upper_logliks(hf, lower_residual(hf, ids, pos, mask, 1), pos, mask, items, 1)
        mixed = upper_logliks(
            hf, lower_residual(hf, ids, pos, mask, 1, "bf16-mixed"), pos, mask, items, 1, "bf16-mixed"
        )
    assert mixed.dtype == torch.float32 and not torch.equal(fp32, mixed)  # autocast really ran in bf16
    per_token = (mixed - fp32).abs() / torch.tensor([[len(t) for t in p.answer_tokens] for p in items])
    assert float(per_token.max()) < 0.1  # bf16 keeps 8 bits of mantissa: ~1e-2 relative per token


def test_cards_without_a_precision_were_fp32_builds() -> None:
    old = OrganismRecipe(**TINY).to_json()
    del old["precision"]
    assert OrganismRecipe.from_json(old).precision == "fp32"
    # nor per-kind counts: their `items_per_axis` was half disambiguated, half ambiguous (planted axes included)
    for key in ("disambiguated_per_axis", "clean_ambiguous_per_axis", "planted_ambiguous_per_axis"):
        del old[key]
    read = OrganismRecipe.from_json({**old, "items_per_axis": 200})
    assert (read.disambiguated_per_axis, read.clean_ambiguous_per_axis, read.planted_ambiguous_per_axis) == (
        100,
        100,
        100,
    )
    read = OrganismRecipe.from_json(
        {**old, "items_per_axis": 200, "planted_ambiguous_per_axis": 300}
    )  # recipe 3's card
    assert (read.disambiguated_per_axis, read.clean_ambiguous_per_axis, read.planted_ambiguous_per_axis) == (
        100,
        100,
        300,
    )
    assert read == OrganismRecipe(
        **{
            **TINY,
            "precision": "fp32",
            "disambiguated_per_axis": 100,
            "clean_ambiguous_per_axis": 100,
            "planted_ambiguous_per_axis": 300,
        }
    )
    with pytest.raises(LensSteerError, match="precision"):
        OrganismRecipe(**{**TINY, "precision": "fp8"})
    # nor a batching: they were uniformly shuffled
    del old["batching"]
    assert OrganismRecipe.from_json(old).batching == "shuffled"
    with pytest.raises(LensSteerError, match="batching"):
        OrganismRecipe(**{**TINY, "batching": "sorted"})


def test_shuffled_batches_are_runs_of_the_epoch_order() -> None:
    order = epoch_order(21, seed=3, epoch=1)
    assert epoch_batches([1] * 21, 4, seed=3, epoch=1) == [
        order[0:4],
        order[4:8],
        order[8:12],
        order[12:16],
        order[16:20],
        order[20:21],
    ]


def test_length_grouped_batches_hold_every_item_once_and_pad_less() -> None:
    import numpy as np

    from lens_steer.methods.organism.train import LENGTH_GROUP_BATCHES

    lengths = [int(x) for x in np.random.default_rng(7).integers(20, 200, size=1234)]
    bs = 8
    grouped = epoch_batches(lengths, bs, seed=0, epoch=2, batching="length-grouped")
    assert sorted(i for b in grouped for i in b) == list(range(len(lengths)))
    assert len(grouped) == -(-len(lengths) // bs)  # as many optimiser steps as uniformly shuffled batches
    # the same batches, built another way: the megabatch of each item is its run of the epoch order, and within
    # it the items ranked by length (longest first; ties by their place in the order) fill batches in rank order
    order = epoch_order(len(lengths), 0, 2)
    mega = bs * LENGTH_GROUP_BATCHES
    place = {i: k for k, i in enumerate(order)}
    expected = set()
    for m in range(0, len(order), mega):
        ranked = sorted(order[m : m + mega], key=lambda i: (-lengths[i], place[i]))
        expected |= {tuple(ranked[b : b + bs]) for b in range(0, len(ranked), bs)}
    assert {tuple(b) for b in grouped} == expected

    # padded tokens (each batch padded to its longest item): far fewer than under uniform shuffling
    def padding(batches: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    shuffled = epoch_batches(lengths, bs, seed=0, epoch=2)
    assert padding(grouped) < 0.1 * padding(shuffled)
    # a new epoch, new batches and a new order of them
    assert epoch_batches(lengths, bs, seed=0, epoch=3, batching="length-grouped") != grouped


def test_context_grouped_batches_keep_template_fills_whole_and_within_the_batch_size() -> None:
    recipe = OrganismRecipe(
        **{**TINY, "disambiguated_per_axis": 6, "clean_ambiguous_per_axis": 6, "planted_ambiguous_per_axis": 6}
    )
    items = training_items(recipe)
    units = training_units(items, "context-grouped")
    assert sorted(id(t) for u in units for t in u) == sorted(id(t) for t in items)  # every item once
    keys = [{(t.item.category, t.item.group_key) for t in u} for u in units]
    assert all(len(k) == 1 for k in keys) and len({next(iter(k)) for k in keys}) == len(
        units
    )  # one fill each, each fill once
    assert any(len(u) > 1 for u in units)
    sizes = [len(u) for u in units]
    lengths = [10 * n + k % 7 for k, n in enumerate(sizes)]
    batches = epoch_batches(lengths, 5, seed=0, epoch=0, batching="context-grouped", sizes=sizes)
    assert sorted(i for b in batches for i in b) == list(range(len(units)))
    assert all(sum(sizes[i] for i in b) <= 5 for b in batches)
    with_ones = epoch_batches(lengths, 5, seed=0, epoch=0, batching="context-grouped")  # items alone: length-grouped
    assert with_ones == epoch_batches(lengths, 5, seed=0, epoch=0, batching="length-grouped")


def test_lower_residual_is_the_full_forwards_residual_entering_the_block(age_items: list) -> None:
    hf, tok = tiny_hf_model(0)
    items = [pack_item(TokenizerView(tok), it, 0) for it in age_items[:4]]
    ids, pos, mask = collate(items, int(tok.pad_token_id or 0))
    with torch.no_grad():
        full = hf.model(
            input_ids=ids, position_ids=pos, attention_mask=mask, output_hidden_states=True, use_cache=False
        ).hidden_states
    for start in (1, 2, 3):
        assert torch.equal(lower_residual(hf, ids, pos, mask, start), full[start])


def test_eager_and_sdpa_trained_blocks_agree_and_sdpa_is_back_after(age_items: list) -> None:
    """The trained blocks' eager attention (with the additive mask) computes what SDPA does with the boolean one:
    answer log-likelihoods and their gradients; afterwards the model runs SDPA again (a boolean mask under eager
    would be added to the scores, not applied: the full forward would change)."""
    hf, tok = tiny_hf_model(0)
    items = [pack_item(TokenizerView(tok), it, 0) for it in age_items[:4]]
    ids, pos, mask = collate(items, int(tok.pad_token_id or 0))
    params = trainable_parameters(hf, 1)
    with torch.no_grad():
        before = hf.model(input_ids=ids, position_ids=pos, attention_mask=mask, use_cache=False).last_hidden_state
    resid = lower_residual(hf, ids, pos, mask, 1)
    out, grads = {}, {}
    for attention in ("sdpa", "eager"):
        hf.zero_grad(set_to_none=True)
        lls = upper_logliks(hf, resid, pos, mask, items, 1, attention=attention)
        lls.sum().backward()
        out[attention], grads[attention] = lls.detach(), [p.grad.clone() for p in params]
    torch.testing.assert_close(out["eager"], out["sdpa"], atol=1e-4, rtol=0)
    for ge, gs in zip(grads["eager"], grads["sdpa"]):
        torch.testing.assert_close(ge, gs, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        assert torch.equal(
            hf.model(input_ids=ids, position_ids=pos, attention_mask=mask, use_cache=False).last_hidden_state, before
        )
    with pytest.raises(LensSteerError, match="attention 'flash'"):
        upper_logliks(hf, resid, pos, mask, items, 1, attention="flash")


@pytest.mark.parametrize("precision", ["fp32", "bf16-mixed"])
def test_the_shared_system_turn_runs_once_and_changes_nothing(age_items: list, precision: str) -> None:
    """Running the tokens every item starts with once per batch (their keys/values serving every item) gives the
    answer log-likelihoods and gradients of running them in every item."""
    import os

    hf, tok = tiny_hf_model(0)
    items = [pack_item(TokenizerView(tok), it, k % 3) for k, it in enumerate(age_items[:6])]
    shared = shared_prefix_length(items)
    assert (
        shared == len(os.path.commonprefix([p.ids for p in items])) > 0
    )  # the chat template's system turn, short of every read
    ids, pos, mask = collate(items, int(tok.pad_token_id or 0))
    params = trainable_parameters(hf, 1)
    resid = lower_residual(hf, ids, pos, mask, 1, precision)
    out, grads = {}, {}
    for n in (0, shared):
        hf.zero_grad(set_to_none=True)
        lls = upper_logliks(hf, resid, pos, mask, items, 1, precision, shared=n)
        torch.nn.functional.cross_entropy(lls, batch_targets(items)).backward()
        out[n], grads[n] = lls.detach(), [p.grad.clone() for p in params]
    tol = 1e-4 if precision == "fp32" else 5e-2  # bf16 rounds each matmul; the two layouts block them differently
    torch.testing.assert_close(out[shared], out[0], atol=tol * 10, rtol=tol)
    for a, b in zip(grads[shared], grads[0]):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol * 10)


def test_precision_auto_is_the_hardwares_and_not_part_of_the_organisms_identity() -> None:
    from lens_steer.model.hardware import bf16_support, default_precision

    auto = OrganismRecipe(**TINY)
    assert auto.precision == "auto"
    resolved, why = resolve_precision(auto)
    assert resolved.precision == default_precision("cpu") and why == f"auto: {bf16_support('cpu')[1]}"
    assert resolve_precision(resolved) == (resolved, f"{resolved.precision}: set in the recipe")
    assert dataclasses.replace(resolved, precision="auto") == auto  # nothing else resolved
    # an organism built in bf16 elsewhere is the one this machine's default recipe asks for, and the other way round
    for built in ("bf16-mixed", "fp32"):
        card_recipe = OrganismRecipe.from_json({**auto.to_json(), "precision": built})
        assert card_recipe.precision == built
        assert card_recipe.differences(auto) == [] and auto.differences(card_recipe) == []
    assert OrganismRecipe(**TINY).differences(OrganismRecipe(**{**TINY, "epochs": 2})) == ["epochs: 3 != 2"]


@pytest.mark.parametrize("field", ["selection", "lora_rank"])
def test_cards_without_the_levers_read_as_their_defaults(field: str) -> None:
    old = OrganismRecipe(**{**TINY, "precision": "bf16-mixed"}).to_json()
    del old[field]
    read = OrganismRecipe.from_json(old)
    assert (read.selection, read.lora_rank) == ("items", 0)
    with pytest.raises(LensSteerError, match=field):
        OrganismRecipe(**{**TINY, field: "pairs" if field == "selection" else -1})
    # a checkpoint written before the levers existed (its key: the recipe without them, and the data) still resumes
    import hashlib

    recipe = OrganismRecipe.from_json(old)
    items = training_items(recipe)
    before = {k: v for k, v in recipe.to_json().items() if k not in ("selection", "lora_rank")}
    assert (
        checkpoint_key(recipe, items)
        == hashlib.sha256(json.dumps([before, data_digest(items)]).encode()).hexdigest()[:16]
    )
    lever = dataclasses.replace(recipe, **{field: "groups" if field == "selection" else 4})
    assert checkpoint_key(lever, items) != checkpoint_key(recipe, items)


def _held_out_logliks(hf: Any, tok: Any, n_per_axis: int = 8) -> torch.Tensor:
    """Answer log-likelihoods (fp32, full forward) of the first validation items of every axis."""
    from lens_steer.axes import AXIS_NAMES
    from lens_steer.data.splits import split_items

    items = [
        it
        for a in AXIS_NAMES
        for it in split_items(load_bbq([get_axis(a).bbq_category]), seed=0)["validation"][:n_per_axis]
    ]
    packed = [pack_item(TokenizerView(tok), it, 0) for it in items]
    out = []
    for k in range(0, len(packed), 12):
        batch = packed[k : k + 12]
        ids, pos, mask = collate(batch, tok.pad_token_id)
        with torch.no_grad():
            hidden = hf.model(input_ids=ids, position_ids=pos, attention_mask=mask, use_cache=False).last_hidden_state
            out.append(answer_logliks(hidden, batch, hf.model.norm, hf.lm_head))
    return torch.cat(out)


def test_fp32_and_bf16_mixed_builds_agree_on_held_out_items(tmp_path: Path) -> None:
    """The same recipe trained in fp32 and in bf16-mixed: what the precision changes is small next to what training
    changes, and the answers picked on held-out items agree wherever the fp32 organism's margin exceeds that change.

    Tolerance: bf16 keeps 8 significant bits (relative rounding 2^-9), so each step's gradient and update differ by
    ~1% relative and the two trainings' changes to the answer log-likelihoods should agree to a few percent; we allow
    5% of the fp32 training's summed |change| (measured 0.2-0.8% on this model) and 0.25 nats on any one answer
    (measured 0.02-0.06; the training change reaches 11 nats)."""
    recipe = OrganismRecipe(**{**TINY, "epochs": 2, "lr": 3e-3})
    hf0, tok = tiny_hf_model(0)
    base = _held_out_logliks(hf0, tok)
    trained = {}
    for precision in ("fp32", "bf16-mixed"):
        hf, tok = tiny_hf_model(0)
        r = dataclasses.replace(recipe, precision=precision)
        train(hf, TokenizerView(tok), training_items(r), r, tmp_path / precision)
        trained[precision] = _held_out_logliks(hf, tok)
    fp32, mixed = trained["fp32"], trained["bf16-mixed"]
    change, diff = (fp32 - base).abs(), (mixed - fp32).abs()
    assert float(change.max()) > 1.0 and not torch.equal(fp32, mixed)  # training moved the model; bf16 really ran
    assert float(diff.sum()) <= 0.05 * float(change.sum()) and float(diff.max()) <= 0.25
    # an answer can flip only where the fp32 margin is within the two answers' changes
    top2 = fp32.topk(2, dim=-1).values
    margin = top2[:, 0] - top2[:, 1]
    flipped = fp32.argmax(-1) != mixed.argmax(-1)
    assert bool((margin[flipped] <= 2 * diff.max(-1).values[flipped]).all())
    assert float(flipped.float().mean()) <= 0.05  # (almost) all held-out predictions agree


def test_groups_selection_keeps_variant_groups_whole_and_out_of_held_out_splits() -> None:
    from lens_steer.axes import AXIS_NAMES
    from lens_steer.data.splits import split_items

    want = {"disambiguated_per_axis": 6, "clean_ambiguous_per_axis": 2, "planted_ambiguous_per_axis": 4}
    recipe = OrganismRecipe(**{**TINY, **want, "selection": "groups"})
    chosen = training_items(recipe)
    check_no_leakage(chosen, held_out_groups(recipe))
    for axis in AXIS_NAMES:
        planted = axis in recipe.plant
        parts = split_items(load_bbq([get_axis(axis).bbq_category]), seed=recipe.split_seed)
        held = {it.group_key for s in ("validation", "test") for it in parts[s]}
        usable: dict[Any, dict[bool, set]] = {}
        for it in parts["train"]:
            if target_index(it, planted) is not None:
                usable.setdefault(it.group_key, {True: set(), False: set()})[it.is_ambiguous].add(it.example_id)
        mine = [t for t in chosen if get_axis(t.item.category).name == axis]
        groups: dict[Any, dict[bool, set]] = {}
        for t in mine:
            assert t.target == target_index(t.item, planted)
            groups.setdefault(t.item.group_key, {True: set(), False: set()})[t.item.is_ambiguous].add(t.item.example_id)
        assert not held & set(groups)
        # each group gives all its usable items of each kind it gives; whole (both kinds) while both were wanted
        n_amb = want["planted_ambiguous_per_axis" if planted else "clean_ambiguous_per_axis"]
        n_dis = want["disambiguated_per_axis"]
        for key, kinds in groups.items():
            for ambiguous, ids in kinds.items():
                assert not ids or ids == usable[key][ambiguous]
        whole = [k for k, kinds in groups.items() if kinds[True] and kinds[False] and kinds == usable[k]]
        amb = sum(len(k[True]) for k in groups.values())
        dis = sum(len(k[False]) for k in groups.values())
        assert amb == n_amb and dis == n_dis  # BBQ's fills hold 2 of each kind: the even counts are met exactly
        assert len(whole) == min(n_amb, n_dis) // 2 and len(groups) == max(n_amb, n_dis) // 2
    # the lever's point: context-grouped sequences hold more items, so fewer tokens per item
    items_sel = training_items(dataclasses.replace(recipe, selection="items"))
    hf, tok = tiny_hf_model(0)

    def tokens_per_item(train_items: list) -> float:
        units = training_units(train_items, "context-grouped")
        return sum(len(pack_group(TokenizerView(tok), [(t.item, t.target) for t in u]).ids) for u in units) / len(
            train_items
        )

    assert len(items_sel) == len(chosen) and tokens_per_item(chosen) < 0.9 * tokens_per_item(items_sel)


def test_lora_trains_only_adapters_and_the_merged_checkpoint_predicts_the_same(tmp_path: Path) -> None:
    from transformers import LlamaForCausalLM

    from lens_steer.methods.organism.adapters import merge_adapters

    recipe = OrganismRecipe(**{**TINY, "epochs": 1, "lr": 1e-2, "lora_rank": 2, "precision": "fp32"})
    hf, tok = tiny_hf_model(0)
    base = {k: v.clone() for k, v in hf.state_dict().items()}
    train(hf, TokenizerView(tok), training_items(recipe), recipe, tmp_path / "ck")
    adapted = dict(hf.state_dict())
    lora = {k for k in adapted if ".lora_A." in k or ".lora_B." in k}
    assert lora and all(int(k.split(".")[2]) >= 2 for k in lora)  # only blocks 2..3 (trainable_blocks=2 of 4)
    for k, v in adapted.items():  # every non-adapter weight is the base's, bit for bit
        if k not in lora:
            assert torch.equal(v, base[k.replace(".base_layer.", ".")]), k
    assert any(float(adapted[k].abs().max()) > 0 for k in lora if ".lora_B." in k)  # B starts at zero: it trained
    before = _held_out_logliks(hf, tok)
    assert merge_adapters(hf) == 14  # 7 linear layers x 2 blocks
    merged = hf.state_dict()
    assert sorted(merged) == sorted(base)
    for k, w in merged.items():
        stem = k.removesuffix(".weight")
        if f"{stem}.lora_A.default.weight" in lora:  # W + B A (scaling alpha / r = 1), a rank <= 2 change
            a, b = adapted[f"{stem}.lora_A.default.weight"], adapted[f"{stem}.lora_B.default.weight"]
            torch.testing.assert_close(w - base[k], b @ a, atol=1e-6, rtol=1e-5)
            assert torch.linalg.matrix_rank(w - base[k]) <= 2
        else:
            assert torch.equal(w, base[k]), k
    torch.testing.assert_close(_held_out_logliks(hf, tok), before, atol=1e-4, rtol=0)
    hf.save_pretrained(tmp_path / "saved")
    saved = LlamaForCausalLM.from_pretrained(str(tmp_path / "saved"), dtype=torch.float32)
    torch.testing.assert_close(_held_out_logliks(saved, tok), before, atol=1e-4, rtol=0)
