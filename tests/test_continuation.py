"""Continuation log-probabilities (lens_steer.forward.continuation) against plain Hugging Face logits, on a tiny
Gemma 2 checkpoint (tests/_arch_checkpoints.py): its final-logit soft-cap applies on this path as on the others,
in padded batches of several lengths, for per-token log-probs and for whole next-token distributions."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from _arch_checkpoints import write_checkpoint
from _tiny_models import single_thread  # noqa: F401 (autouse fixture)

from lens_steer.errors import LensSteerError
from lens_steer.forward.continuation import continuation_logprobs, next_token_logprobs, text_token_logprobs
from lens_steer.model.load import load_model
from lens_steer.model.tokens import encode_texts

pytestmark = pytest.mark.filterwarnings("ignore")

TEXTS = ["The cat sat on the mat.", "A dog ran home.", "Fish swim in the cold river all winter long."]


@pytest.fixture(scope="module")
def gemma2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, Any]:
    """lens_steer's model of the tiny Gemma 2 folder, plain HF on it, and plain HF with the soft-cap switched off."""
    from transformers import AutoModelForCausalLM

    folder: Path = write_checkpoint("gemma2", tmp_path_factory.mktemp("gemma2"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(str(folder))
        hf = AutoModelForCausalLM.from_pretrained(folder).eval()
        uncapped = AutoModelForCausalLM.from_pretrained(folder, final_logit_softcapping=None).eval()
    assert hf.config.final_logit_softcapping == 30.0 and uncapped.config.final_logit_softcapping is None
    return model, hf, uncapped


def hf_log_probs(hf: Any, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(hf(torch.tensor([ids])).logits[0].double(), -1)


def test_text_token_logprobs_apply_gemma2_soft_cap_as_hugging_face(gemma2: tuple[Any, Any, Any]) -> None:
    model, hf, uncapped = gemma2
    got = text_token_logprobs(model, TEXTS, max_batch=3)  # one right-padded batch of three lengths
    gap = 0.0
    for text, values in zip(TEXTS, got):
        ids = encode_texts(model, [text])[0]
        picks = (torch.arange(len(ids) - 1), torch.tensor(ids[1:]))
        torch.testing.assert_close(values.double(), hf_log_probs(hf, ids)[picks], rtol=0, atol=2e-5)
        gap = max(gap, float((values.double() - hf_log_probs(uncapped, ids)[picks]).abs().max()))
    assert gap > 1e-3  # without the cap the numbers would be visibly different: the comparison can fail


def test_next_token_distributions_apply_gemma2_soft_cap_as_hugging_face(gemma2: tuple[Any, Any, Any]) -> None:
    model, hf, uncapped = gemma2
    ids = encode_texts(model, TEXTS)
    prompts, conts = [s[:3] for s in ids], [s[3:] for s in ids]
    rows = next_token_logprobs(model, prompts, conts, max_batch=2)
    plain = continuation_logprobs(model, prompts, conts, max_batch=2)
    for p, c, dist, values in zip(prompts, conts, rows, plain):
        want = hf_log_probs(hf, p + c)[len(p) - 1 : len(p) - 1 + len(c)]
        assert dist.shape == (len(c), int(model.cfg.d_vocab))
        torch.testing.assert_close(dist.double(), want, rtol=0, atol=2e-5)
        torch.testing.assert_close(values, dist[torch.arange(len(c)), torch.tensor(c)])
        assert (
            float((dist.double() - hf_log_probs(uncapped, p + c)[len(p) - 1 : len(p) - 1 + len(c)]).abs().max()) > 1e-3
        )


def test_an_empty_continuation_is_one_line(gemma2: tuple[Any, Any, Any]) -> None:
    model = gemma2[0]
    with pytest.raises(LensSteerError, match="sequence 1: the prompt and the continuation"):
        continuation_logprobs(model, [[5, 6], [7]], [[8], []])
    with pytest.raises(LensSteerError, match="2 prompts but 1 continuations"):
        next_token_logprobs(model, [[5, 6], [7]], [[8]])
