"""Running a forward from a stored residual at a block (lens_steer.forward.residual_cache): checked against full forward
passes on the tiny model (TL 4 bridge or TL 3)."""

from __future__ import annotations

import pytest
import torch
from _tiny_models import BACKENDS, make_tiny, single_thread  # noqa: F401 (autouse fixture)

from lens_steer.errors import LensSteerError
from lens_steer.forward.engine import RunPlan, final_residual, residual_reuse_for
from lens_steer.forward.questions import Question
from lens_steer.forward.residual_cache import (
    ResidualCache,
    batch_key,
    can_run_blocks,
    capture_hooks,
    run_blocks,
    start_block,
)
from lens_steer.forward.scoring import score_questions
from lens_steer.model.load import accepts_kv_cache, model_identity
from lens_steer.model.tokens import encode_texts, pad_batch, pad_id
from lens_steer.steering.hooks import steer
from lens_steer.steering.vectors import SteeringVector, VectorMetadata

QUESTIONS = [
    Question("Two friends met at the station.", "Who was late?", ("The first friend", "The second", "Unknown")),
    Question(
        "A long context about a cat and a dog playing in the yard all day long.",
        "Who won?",
        ("cat", "dog", "Can't tell"),
    ),
    Question("", "What is two plus two?", ("3", "4", "5")),
    Question("Short.", "Which?", ("a long option with many words in it", "b", "neither")),
]


@pytest.fixture(scope="module", params=BACKENDS)
def model(request: pytest.FixtureRequest):
    return make_tiny(request.param, seed=5)


def vector(model, layers, hook="hook_resid_post", seed=0, scale=4.0) -> SteeringVector:
    ident = model_identity(model)
    g = torch.Generator().manual_seed(seed)
    meta = VectorMetadata(model_name=ident.name, d_model=ident.d_model, hook=hook, processing=ident.processing)
    return SteeringVector({layer: torch.randn(ident.d_model, generator=g) * scale for layer in layers}, meta)


def test_start_block_by_hand():
    assert start_block(["blocks.3.hook_resid_post", "blocks.5.hook_resid_post"]) == 3
    assert start_block(["blocks.3.hook_resid_pre"]) == 2  # the hook changes block 3's own input
    assert start_block(["blocks.4.attn.hook_z", "blocks.6.hook_mlp_out"]) == 4
    assert start_block(["blocks.1.hook_resid_pre"]) is None  # nothing before block 1 to reuse
    assert start_block(["blocks.0.hook_resid_post"]) is None
    assert start_block(["hook_embed", "blocks.3.hook_resid_post"]) is None
    assert start_block([]) is None


def test_residual_cache_keeps_within_its_byte_budget():
    one = torch.zeros(2, 3, 4)  # 96 bytes
    cache = ResidualCache([2, 1], max_bytes=2 * 96)
    assert cache.layers == (1, 2)
    assert cache.capture_layers(1) == (1,) and cache.capture_layers(3) == (1, 2, 3)
    cache.put("a", {1: one, 2: one})
    assert cache.nbytes == 192 and cache.get("a", 2) is one and cache.get("a", 3) is None
    cache.put("b", {1: one})  # 288 bytes > 192: the least recently used batch ("a") goes
    assert cache.nbytes == 96 and cache.get("a", 1) is None and cache.get("b", 1) is one
    assert (cache.hits, cache.misses) == (2, 2)
    with pytest.raises(LensSteerError, match="block indices >= 1"):
        ResidualCache([0, 2])


def test_batch_key_depends_on_values_and_shape():
    a = torch.tensor([[1, 2, 3]])
    assert batch_key(a) == batch_key(a.clone())
    assert batch_key(a) != batch_key(torch.tensor([[1, 2, 4]]))
    assert batch_key(a) != batch_key(a.reshape(3, 1))
    assert batch_key(a, a) != batch_key(a)


@pytest.mark.parametrize("start", [1, 2, 3])
def test_run_blocks_equals_the_full_steered_forward(model, start):
    assert can_run_blocks(model)
    ids = encode_texts(model, ["the cat sat on the mat", "a dog", "two plus two is four, said the teacher"])
    batch = pad_batch(ids, pad_id=pad_id(model), padding_side="right")
    vec = vector(model, [start, 3])
    with torch.inference_mode(), steer(model, [(vec, 1.5)]):
        box: dict[int, torch.Tensor] = {}
        full = final_residual(model, batch.tokens, {}, capture_hooks([start], box))
        from_block = run_blocks(model, box[start], start)
    torch.testing.assert_close(from_block, full, rtol=1e-5, atol=1e-5)
    with torch.inference_mode():  # and the steering matters: the unsteered forward differs
        plain = final_residual(model, batch.tokens, {})
    assert (plain - full).abs().max() > 1e-3


def test_run_blocks_with_a_kv_cache_equals_one_sequence(model):
    if not accepts_kv_cache(model):
        pytest.skip("Hugging Face KV caches are a TransformerBridge feature")
    from transformers import DynamicCache

    prompts = encode_texts(model, ["the long prompt of the first row here", "short"])
    conts = [
        model.tokenizer(" and more words", add_special_tokens=False)["input_ids"],
        model.tokenizer(" x", add_special_tokens=False)["input_ids"],
    ]
    p = pad_batch(prompts, pad_id=pad_id(model), padding_side="right")
    c = pad_batch(conts, pad_id=pad_id(model), padding_side="right")
    mask = torch.cat([p.attention_mask, c.attention_mask], dim=1)
    start = 2
    vec = vector(model, [2])
    with torch.inference_mode(), steer(model, [(vec, 2.0)]):
        box_p: dict[int, torch.Tensor] = {}
        box_c: dict[int, torch.Tensor] = {}
        cache = DynamicCache()
        final_residual(model, p.tokens, {"past_key_values": cache}, capture_hooks([start], box_p))
        final_residual(
            model, c.tokens, {"past_key_values": cache, "attention_mask": mask}, capture_hooks([start], box_c)
        )
        cache = DynamicCache()
        run_blocks(model, box_p[start], start, past_key_values=cache)
        from_block = run_blocks(model, box_c[start], start, attention_mask=mask, past_key_values=cache)
        for row in range(2):  # the same continuation run as one unpadded sequence
            seq = torch.tensor([prompts[row] + conts[row]])
            alone = final_residual(model, seq, {})[0, len(prompts[row]) :]
            torch.testing.assert_close(from_block[row, : len(conts[row])], alone, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("scoring", ["cloze", "letter"])
def test_scores_with_a_residual_cache_equal_scores_without(model, scoring):
    cache = ResidualCache([1, 2])
    for layers, hook in [
        ([2], "hook_resid_post"),
        ([1, 3], "hook_resid_post"),
        ([2], "hook_resid_pre"),
        ([3], "hook_resid_post"),
    ]:
        vec = vector(model, layers, hook, seed=len(layers))
        reuse = residual_reuse_for(model, cache, vec)
        assert reuse is not None and reuse.start == (layers[0] - 1 if hook == "hook_resid_pre" else layers[0])
        with steer(model, [(vec, 3.0)]):
            direct = score_questions(model, QUESTIONS, scoring=scoring, plan=RunPlan(max_batch=2))
            misses = cache.misses
            first = score_questions(model, QUESTIONS, scoring=scoring, plan=RunPlan(max_batch=2, reuse=reuse))
            hits = cache.hits
            second = score_questions(model, QUESTIONS, scoring=scoring, plan=RunPlan(max_batch=2, reuse=reuse))
        assert cache.hits > hits  # the second pass ran from stored residuals
        assert cache.misses >= misses
        for a, b, c in zip(direct, first, second):
            assert a.pred == b.pred == c.pred
            torch.testing.assert_close(
                torch.tensor(c.option_scores), torch.tensor(a.option_scores), rtol=1e-4, atol=1e-4
            )
            torch.testing.assert_close(
                torch.tensor(b.option_scores), torch.tensor(a.option_scores), rtol=1e-4, atol=1e-4
            )


def test_no_reuse_without_a_vector_or_before_block_one(model):
    cache = ResidualCache([1])
    assert residual_reuse_for(model, None, vector(model, [2])) is None
    assert residual_reuse_for(model, cache, None) is None
    assert residual_reuse_for(model, cache, vector(model, [0])) is None
    with pytest.raises(LensSteerError, match="cannot run from block 0"):
        run_blocks(model, torch.zeros(1, 2, model_identity(model).d_model), 0)
