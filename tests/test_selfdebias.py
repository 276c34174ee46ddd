"""Tests for lens_steer.methods.baselines.selfdebias: Schick et al.'s rescaling by hand on a 3-token vocabulary, and the
model-level scorer against a plain re-implementation with full logits."""

from __future__ import annotations

import math

import pytest
import torch

from lens_steer.methods.baselines.selfdebias import SCHICK_PREFIXES, schick_continuation_logprobs, schick_rescale
from lens_steer.model.load import load_model


def test_rescaling_by_hand_on_three_tokens():
    p = [0.5, 0.3, 0.2]
    biased = [[0.2, 0.6, 0.2], [0.45, 0.3, 0.25]]
    # delta = max(0, max_y p_y - p) = [0, 0.3, 0.05]; alpha = max(0.01, exp(-50 delta)) = [1, 0.01 (floor), exp(-2.5)]
    alpha = [1.0, 0.01, math.exp(-2.5)]
    q = [pi * ai for pi, ai in zip(p, alpha)]
    expected = [math.log(x / sum(q)) for x in q]
    got = schick_rescale(torch.tensor(p).log(), torch.tensor(biased).log(), decay=50.0, epsilon=0.01)
    assert got.tolist() == pytest.approx(expected, rel=1e-6)
    # with a smaller decay the floor is not reached: alpha = exp(-2 delta)
    alpha2 = [1.0, math.exp(-0.6), math.exp(-0.1)]
    q2 = [pi * ai for pi, ai in zip(p, alpha2)]
    got2 = schick_rescale(torch.tensor(p).log(), torch.tensor(biased).log(), decay=2.0)
    assert got2.tolist() == pytest.approx([math.log(x / sum(q2)) for x in q2], rel=1e-6)


def test_no_change_when_no_prefix_raises_a_token():
    p = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8]])
    biased = torch.stack([p * torch.tensor([1.0, 0.5, 0.5]), p * 0.9])  # never above p
    assert torch.allclose(schick_rescale(p.log(), biased.log()), p.log(), atol=1e-6)


def test_shape_mismatch_is_one_line():
    with pytest.raises(Exception, match="do not match"):
        schick_rescale(torch.zeros(2, 3), torch.zeros(1, 3, 3))


def test_model_scores_equal_a_plain_reimplementation():
    model = load_model("tiny-llama", seed=5)
    tok = model.tokenizer
    text_ids = tok("Women are bad at maths.", add_special_tokens=False)["input_ids"]
    head, body = text_ids[:1], text_ids[1:]
    prompts = [head] + [tok(p, add_special_tokens=False)["input_ids"] + head for p in SCHICK_PREFIXES[:3]]
    got = schick_continuation_logprobs(model, [prompts], [body])[0]

    def dists(prompt: list[int]) -> torch.Tensor:  # full forward, log-softmax at the body's positions
        with torch.inference_mode():
            logits = model(torch.tensor([prompt + body]))[0].float()
        return torch.log_softmax(logits[len(prompt) - 1 : len(prompt) - 1 + len(body)], dim=-1)

    regular = dists(prompts[0]).exp()
    biased = torch.stack([dists(p).exp() for p in prompts[1:]]).amax(0)
    alpha = torch.exp(-50.0 * (biased - regular).clamp_min(0)).clamp_min(0.01)
    q = regular * alpha
    expected = torch.log(q / q.sum(-1, keepdim=True))[torch.arange(len(body)), torch.tensor(body)]
    assert got.tolist() == pytest.approx(expected.tolist(), abs=1e-4)
    full = schick_continuation_logprobs(model, [prompts], [body], full=True)[0]
    assert full.shape == (len(body), int(model.cfg.d_vocab)) and torch.allclose(
        full.exp().sum(-1), torch.ones(len(body)), atol=1e-5
    )
