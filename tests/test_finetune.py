"""Tests for lens_steer.methods.baselines.finetune on the tiny model: the loss falls, training is determined by the
seed, the cache key follows everything that shapes the adapter, a cached adapter gives the trained model back, and the
base model is left untouched."""

from __future__ import annotations

import pytest
import torch
from _tiny_models import quiet_tiny_llama

from lens_steer.errors import LensSteerError, VectorError
from lens_steer.forward.questions import Question
from lens_steer.forward.scoring import score_questions
from lens_steer.methods.baselines.finetune import LoraRecipe, example_tokens, finetune_key, finetuned_model, train_lora
from lens_steer.model.load import PROCESSING_FLAGS, load_model
from lens_steer.model.tokens import encode_texts
from lens_steer.steering.hooks import steer
from lens_steer.steering.vectors import SteeringVector, VectorMetadata

TEXTS = [
    "The grandson was struggling with the app. Who was not comfortable using the phone? Answer: (b",
    "Two friends met for lunch; the nurse paid. Who paid? Answer: (a",
    "A Muslim man and a Christian man were at the airport. Who was searched? Answer: (c",
] * 4
FAST = LoraRecipe(lr=2e-3, batch_size=4)


def fresh():
    return quiet_tiny_llama(seed=4)


@pytest.fixture(scope="module")
def model():
    return fresh()


def logits(m, text: str = "Who was not comfortable using the phone?") -> torch.Tensor:
    with torch.inference_mode():
        return m(m.to_tokens(text))[0].float()


def test_loss_falls_and_the_adapter_is_merged(model):
    tuned = fresh()
    state, losses = train_lora(tuned, TEXTS, FAST, seed=0)
    assert len(losses) == FAST.epochs and losses[-1] < losses[0]
    assert not torch.allclose(logits(tuned), logits(model))
    # merged: the Hugging Face module alone computes what the hooked model does
    x = model.to_tokens("Who paid?")
    with torch.inference_mode():
        assert torch.allclose(tuned.original_model(x).logits.float(), tuned(x).float(), atol=1e-5)
    # every attention and MLP projection of every block carries an adapter (A and B each)
    per_block = {k.split("layers.")[1].split(".")[0] for k in state}
    assert per_block == {str(i) for i in range(int(model.cfg.n_layers))}
    for proj in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert sum(proj in k for k in state) == 2 * int(model.cfg.n_layers), proj
    assert len(state) == 2 * 7 * int(model.cfg.n_layers)  # and nothing else (not the output head)


def test_training_is_determined_by_the_seed(model):
    a, la = train_lora(fresh(), TEXTS, FAST, seed=1)
    b, lb = train_lora(fresh(), TEXTS, FAST, seed=1)
    c, _ = train_lora(fresh(), TEXTS, FAST, seed=2)
    assert la == lb and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_cache_key_follows_recipe_seed_texts_and_base_weights(model):
    k = finetune_key(model, TEXTS, FAST, 0)
    assert k == finetune_key(model, list(TEXTS), LoraRecipe(lr=2e-3, batch_size=4), 0)
    other = load_model("tiny-llama", seed=5)  # same name and shapes, other weights
    variants = {
        finetune_key(model, TEXTS, LoraRecipe(lr=1e-3, batch_size=4), 0),
        finetune_key(model, TEXTS, LoraRecipe(lr=2e-3, batch_size=4, r=8), 0),
        finetune_key(model, TEXTS, FAST, 1),
        finetune_key(model, TEXTS[:-1], FAST, 0),
        finetune_key(model, list(reversed(TEXTS)), FAST, 0),
        finetune_key(other, TEXTS, FAST, 0),
    }
    assert k not in variants and len(variants) == 6


def test_cached_adapter_gives_the_trained_model_back(model, tmp_path):
    before = logits(model)
    first = finetuned_model(fresh, TEXTS, recipe=FAST, seed=0, cache=tmp_path)
    second = finetuned_model(fresh, TEXTS, recipe=FAST, seed=0, cache=tmp_path)
    assert torch.equal(logits(model), before)  # the caller's model is never changed
    assert first.trained and not second.trained and first.key == second.key
    assert (tmp_path / first.key / "adapter.safetensors").is_file()
    assert second.epoch_losses == first.epoch_losses and second.meta["n_texts"] == len(TEXTS)
    assert torch.allclose(logits(first.model), logits(second.model), atol=1e-5)
    assert first.model.cfg.model_name.startswith("tiny-llama+lora-") and model.cfg.model_name == "tiny-llama"
    q = [Question("A grandson and a grandfather met.", "Who forgot?", ("The grandson", "The grandfather", "Unknown"))]
    assert score_questions(second.model, q)[0].option_scores != score_questions(model, q)[0].option_scores
    vec = SteeringVector(
        {1: torch.ones(64)}, VectorMetadata("tiny-llama", 64, processing={f: False for f in PROCESSING_FLAGS})
    )
    with pytest.raises(VectorError):  # a base-model vector is refused on the fine-tuned model
        with steer(second.model, [(vec, 1.0)]):
            pass


PAIRS = [
    ("Two friends met for lunch; the nurse paid. Who paid? Answer:", " The nurse"),
    ("A grandson and a grandfather met. Who forgot? Answer:", " Unknown"),
]


def hand_loss(m, examples) -> float:
    """The mean next-token NLL over the learnt tokens of every example, pooled, read from the model's own logits."""
    total, count = 0.0, 0
    for ex in examples:
        if isinstance(ex, str):
            ids = encode_texts(m, [ex])[0]
            first = 1
        else:
            head = encode_texts(m, [ex[0]])[0]
            ids = encode_texts(m, [ex[0] + ex[1]])[0]
            first = len(head)
        with torch.inference_mode():
            lp = torch.log_softmax(m(torch.tensor([ids]))[0].double(), -1)
        total -= sum(float(lp[t - 1, ids[t]]) for t in range(first, len(ids)))
        count += len(ids) - first
    return total / count


def test_a_pair_learns_its_completion_only_and_a_text_every_token(model):
    ids, read = example_tokens(model, PAIRS[0])
    assert ids == encode_texts(model, [PAIRS[0][0] + PAIRS[0][1]])[0]
    n_head = len(encode_texts(model, [PAIRS[0][0]])[0])
    assert read == [False] * n_head + [True] * (len(ids) - n_head) and sum(read) > 0
    assert example_tokens(model, TEXTS[0])[1] == [True] * len(encode_texts(model, [TEXTS[0]])[0])
    # one batch, one epoch: the loss reported is the untouched model's (LoRA's B starts at 0), so it must equal the
    # NLL over the learnt tokens computed by hand
    for examples in (PAIRS, [TEXTS[0], PAIRS[1]]):
        one = LoraRecipe(epochs=1, batch_size=len(examples))
        _, losses = train_lora(fresh(), examples, one, seed=0)
        assert losses[0] == pytest.approx(hand_loss(model, examples), rel=1e-4)
    assert finetune_key(model, PAIRS, FAST, 0) != finetune_key(model, [a + b for a, b in PAIRS], FAST, 0)


def test_bad_recipe_and_no_texts(model):
    with pytest.raises(LensSteerError, match="r must be a positive integer"):
        LoraRecipe(r=0)
    with pytest.raises(LensSteerError, match="no texts to fine-tune on"):
        train_lora(fresh(), [], FAST, seed=0)
