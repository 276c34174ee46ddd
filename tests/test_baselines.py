"""Tests for lens_steer.methods.baselines.prompting on the tiny model: the prompting prefix's exact text and place,
option and text log-probabilities recomputed with plain full-logit forwards (prompting and Self-Debias Schick), the
fine-tuning baseline's predictions against its own model, one-line errors."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from _tiny_models import quiet_tiny_llama

from lens_steer.data.bbq import load_bbq
from lens_steer.data.select import limit_bbq
from lens_steer.data.splits import select_split
from lens_steer.errors import LensSteerError
from lens_steer.forward.questions import Question, cloze_prompt, encode_pair
from lens_steer.forward.scoring import score_questions
from lens_steer.methods.baselines.prompting import (
    PROMPTING_PREFIX,
    baseline_bbq_scores,
    baseline_predictions,
    finetune_examples,
    prefixed_question,
    score_questions_with,
    text_logprobs,
)
from lens_steer.methods.baselines.selfdebias import SCHICK_PREFIXES
from lens_steer.model.tokens import encode_texts
from lens_steer.tasks.bbq import bbq_question

DATA = Path(os.environ.get("LENS_STEER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
pytestmark = pytest.mark.skipif(
    not (DATA / "bbq").is_dir(), reason=f"missing data: BBQ under {DATA}; set LENS_STEER_DATA"
)


tiny = functools.partial(quiet_tiny_llama, seed=6)  # a fresh tiny model each call (finetuning's base)


@pytest.fixture(scope="module")
def model():
    return tiny()


@pytest.fixture(scope="module")
def items():
    return limit_bbq(select_split(load_bbq(["Religion"], data_root=DATA), "test"), 4, seed=3)


def full_logprobs(model, ids: list[int]) -> torch.Tensor:
    """Log-softmax of a plain full-logit forward: row t predicts token t + 1."""
    with torch.inference_mode():
        return torch.log_softmax(model(torch.tensor([ids]))[0].float(), dim=-1)


def test_prompting_prefix_opens_the_user_turn(model, items):
    assert PROMPTING_PREFIX == "Ensure that your answers are fair and unbiased, and do not contain stereotypes.\n\n"
    _, scores, _ = baseline_bbq_scores(model, items, "prompting")
    it = items[0]
    assert f"<|im_start|>user\n{PROMPTING_PREFIX}{it.context} {it.question}<|im_end|>" in scores[0].prompt
    q = Question("", "What is 2 + 2?", ("3", "4"))
    assert prefixed_question(q, "P. ").question == "P. What is 2 + 2?"


def test_prompting_cloze_scores_equal_plain_forwards(model, items):
    _, scores, preds = baseline_bbq_scores(model, items, "prompting")
    for it, s, p in zip(items, scores, preds):
        q = prefixed_question(bbq_question(it), PROMPTING_PREFIX)
        text, options = cloze_prompt(q, "reference", model.tokenizer)
        assert text == s.prompt
        lls = []
        for o in options:
            ctx, cont = encode_pair(
                model, text, o, move_trailing_whitespace=False
            )  # the reference (chat) prompt keeps its newline
            lp = full_logprobs(model, ctx + cont)
            lls.append(sum(float(lp[len(ctx) - 1 + t, tok]) for t, tok in enumerate(cont)))
        assert s.option_logliks == pytest.approx(lls, abs=2e-3)
        assert p.pred == int(np.argmax(lls)) and p.label == it.label


def test_schick_cloze_scores_equal_a_plain_reimplementation(model, items):
    it = items[1]
    s = score_questions_with(model, [bbq_question(it)], "self-debias-schick")[0]
    variants = [bbq_question(it)] + [prefixed_question(bbq_question(it), p) for p in SCHICK_PREFIXES]
    expected = []
    for j in range(3):
        dists = []
        for v in variants:
            text, options = cloze_prompt(v, "reference", model.tokenizer)
            ctx, cont = encode_pair(model, text, options[j], move_trailing_whitespace=False)
            dists.append(full_logprobs(model, ctx + cont)[len(ctx) - 1 : len(ctx) - 1 + len(cont)].exp())
        p, biased = dists[0], torch.stack(dists[1:]).amax(0)
        q = p * torch.exp(-50.0 * (biased - p).clamp_min(0)).clamp_min(0.01)
        q = q / q.sum(-1, keepdim=True)
        expected.append(float(sum(torch.log(q[t, tok]) for t, tok in enumerate(cont))))
    assert s.option_logliks == pytest.approx(expected, abs=2e-3)
    assert s.pred == int(np.argmax(expected))


def test_schick_letter_reads_the_letters_at_one_position(model, items):
    s = score_questions_with(model, [bbq_question(items[0])], "self-debias-schick", scoring="letter")[0]
    assert len(s.option_scores) == 3 and np.exp(s.option_scores).sum() == pytest.approx(1.0)
    with pytest.raises(LensSteerError, match="unknown self-debias-schick scoring 'letter-permuted'"):
        score_questions_with(model, [bbq_question(items[0])], "self-debias-schick", scoring="letter-permuted")


def test_text_logprobs_prompting_and_none_equal_plain_forwards(model):
    text = "The schoolgirl is walking down the street. She is a target."
    ids = encode_texts(model, [text])[0]
    plain = full_logprobs(model, ids)
    expected = [float(plain[t - 1, ids[t]]) for t in range(1, len(ids))]
    assert text_logprobs(model, [text])[0].tolist() == pytest.approx(expected, abs=1e-4)
    prefix = model.tokenizer(PROMPTING_PREFIX, add_special_tokens=False)["input_ids"]
    bos = model.tokenizer.bos_token_id
    head = [bos] + prefix if ids[0] == bos else prefix + ids[:1]  # the prefix after a BOS, else before the first token
    seq = head + ids[1:]
    lp = full_logprobs(model, seq)
    expected_p = [float(lp[len(head) + t - 2, ids[t]]) for t in range(1, len(ids))]
    assert text_logprobs(model, [text], "prompting")[0].tolist() == pytest.approx(expected_p, abs=1e-4)


def test_finetune_baseline_scores_its_own_model(model, items, tmp_path, monkeypatch):
    monkeypatch.setenv("LENS_STEER_CACHE", str(tmp_path))
    train = limit_bbq(select_split(load_bbq(["Religion"], data_root=DATA), "train"), 12, seed=0)
    texts = finetune_examples(train, model.tokenizer)
    from lens_steer.forward.questions import cloze_prompt

    # every train item: the evaluator's prompt and the gold answer (stereotyped or not)
    want = [(cloze_prompt(bbq_question(i), "reference", model.tokenizer)[0], i.answers[i.label]) for i in train]
    assert texts and texts == want and any(i.label == i.biased_index for i in train)
    preds = baseline_predictions(model, items, "finetune", load_base=tiny, train_texts=texts, seed=0)
    from lens_steer.methods.baselines.finetune import finetuned_model

    tuned = finetuned_model(tiny, texts, seed=0)  # read back from the cache just written
    assert not tuned.trained
    plain = score_questions(tuned.model, [bbq_question(i) for i in items])
    assert [p.pred for p in preds] == [s.pred for s in plain]
    assert [p.option_logprobs for p in preds] == [pytest.approx(tuple(s.option_scores), abs=1e-5) for s in plain]


def test_errors_are_one_line(model, items):
    with pytest.raises(LensSteerError, match="unknown baseline 'debias'"):
        baseline_predictions(model, items, "debias")
    with pytest.raises(LensSteerError, match="needs a base-model loader and the train texts"):
        baseline_predictions(model, items, "finetune")


def test_paper_self_debias_goes_through_the_self_check(model, items):
    from lens_steer.methods.baselines.prompting import self_debias_scores
    from lens_steer.methods.baselines.selfcheck import self_check_answers

    qs = [bbq_question(i) for i in items[:2]]
    scores = self_debias_scores(model, qs)
    answers = self_check_answers(model, qs)
    assert [(s.reply, s.pred) for s in scores] == [(a.reply, a.pred) for a in answers]
    with pytest.raises(LensSteerError, match="runs unsteered"):
        from lens_steer.model.load import PROCESSING_FLAGS
        from lens_steer.steering.vectors import SteeringVector, VectorMetadata

        vec = SteeringVector(
            {1: torch.ones(64)}, VectorMetadata("tiny-llama", 64, processing={f: False for f in PROCESSING_FLAGS})
        )
        self_debias_scores(model, qs, vector=vec, coeff=1.0)
