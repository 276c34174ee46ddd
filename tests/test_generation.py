"""Steered generation (KV cache, left padding, position modes) and the paper's generate protocol."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
import torch
from _hf_pair import random_vector, tiny_pair
from _tiny_models import single_thread  # noqa: F401

from lens_steer.errors import LensSteerError
from lens_steer.forward.generation import (
    PARSE_RULES,
    generate,
    generate_answers,
    parse_answer,
    parse_counts,
    stop_token_ids,
)
from lens_steer.steering.hf import steer_hf

PROMPTS = [[5, 6, 7, 8, 9, 10, 11, 12], [20, 21, 22], [30, 31, 32, 33, 34], [60, 61, 62, 63]]


@pytest.fixture(scope="module")
def pair() -> tuple[Any, Any]:
    return tiny_pair("llama")


def ids(gens: list[Any]) -> list[list[int]]:
    return [g.token_ids for g in gens]


@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
def test_kv_cache_and_refeeding_give_the_same_greedy_tokens_under_steering(pair: Any, positions: str) -> None:
    _, bridge = pair
    vector = random_vector(bridge, [1, 2], scale=4.0)
    kw: dict[str, Any] = {
        "max_new_tokens": 12,
        "vector": vector,
        "coeff": 1.0,
        "positions": positions,
        "repetition_penalty": 2.0,
    }
    cached = generate(bridge, PROMPTS, use_cache=True, **kw)
    refed = generate(bridge, PROMPTS, use_cache=False, **kw)
    assert ids(cached) == ids(refed)
    assert all(len(set(g.token_ids)) > 3 for g in cached)  # not one token repeated: a discriminating comparison
    one_by_one = [generate(bridge, [p], **kw)[0] for p in PROMPTS]  # no padding at all
    assert ids(cached) == ids(one_by_one)  # left padding changes nothing
    assert ids(cached) != ids(generate(bridge, PROMPTS, max_new_tokens=12, repetition_penalty=2.0))  # steering does


def test_positions_generated_leaves_the_prompt_untouched(pair: Any) -> None:
    _, bridge = pair
    vector = random_vector(bridge, [1], scale=6.0)
    last = f"blocks.{int(bridge.cfg.n_layers) - 1}.hook_resid_post"

    def run(**kw: Any) -> tuple[list[torch.Tensor], Any]:
        seen: list[torch.Tensor] = []
        with bridge.hooks(fwd_hooks=[(last, lambda t, hook: seen.append(t.detach().clone()))]):
            gens = generate(bridge, PROMPTS[:1], max_new_tokens=6, return_scores=True, **kw)
        return seen, gens[0]

    plain_resid, plain = run()
    gen_resid, generated = run(vector=vector, coeff=1.0, positions="generated")
    all_resid, everywhere = run(vector=vector, coeff=1.0, positions="all")
    assert torch.equal(gen_resid[0], plain_resid[0])  # the whole prompt pass (every prompt position) is unsteered
    assert torch.equal(generated.scores[0], plain.scores[0])  # so is the first token's distribution
    assert not torch.allclose(gen_resid[1], plain_resid[1], atol=1e-3)  # the first generated token is steered
    assert not torch.allclose(all_resid[0], plain_resid[0], atol=1e-3)  # "all" steers the prompt too


@pytest.mark.parametrize("steered", [False, True])
def test_greedy_generation_equals_hugging_face_generate(pair: Any, steered: bool) -> None:
    hf, bridge = pair
    vector = random_vector(bridge, [0, 3], scale=4.0) if steered else None
    ours = generate(bridge, PROMPTS, max_new_tokens=20, repetition_penalty=1.1, vector=vector, coeff=1.0)
    for prompt, gen in zip(PROMPTS, ours):
        ctx = steer_hf(hf, vector, 1.0) if vector is not None else contextlib.nullcontext()
        with ctx, torch.inference_mode():
            ref = hf.generate(
                torch.tensor([prompt]),
                max_new_tokens=20,
                do_sample=False,
                repetition_penalty=1.1,
                pad_token_id=hf.config.pad_token_id,
            )
        assert gen.token_ids == ref[0, len(prompt) :].tolist()


def test_generation_stops_at_eos_and_sampling_follows_the_seed(pair: Any) -> None:
    _, bridge = pair
    first = generate(bridge, PROMPTS[:1], max_new_tokens=5)[0].token_ids
    stopped = generate(bridge, PROMPTS, max_new_tokens=5, stop_ids=[first[1]])
    assert stopped[0].token_ids == first[:2]  # cut after the stop token, which is kept
    assert stop_token_ids(bridge) == [bridge.tokenizer.eos_token_id]
    a = generate(bridge, PROMPTS, max_new_tokens=8, temperature=1.5, seed=3)
    b = generate(bridge, PROMPTS, max_new_tokens=8, temperature=1.5, seed=3)
    c = generate(bridge, PROMPTS, max_new_tokens=8, temperature=1.5, seed=4)
    assert ids(a) == ids(b) and ids(a) != ids(c)
    for bad in ({"max_new_tokens": 0}, {"temperature": -1.0}, {"positions": "middle"}, {"repetition_penalty": 0.0}):
        with pytest.raises(LensSteerError) as e:
            generate(bridge, PROMPTS, **bad)
        assert "\n" not in str(e.value)
    with pytest.raises(LensSteerError, match="empty prompt"):
        generate(bridge, [[]])


# ---- the paper's protocol ---------------------------------------------------------------------------
OPTIONS = ("The grandfather", "The grandson", "Can't be determined")


@pytest.mark.parametrize(
    "reply,expected",
    [
        ("a", (0, "letter")),
        ("(b) The grandson", (1, "letter")),  # "(b" holds b
        ("C.", (2, "letter")),
        ("ca", (0, "letter")),  # the paper's code tries a before c in the first two characters
        ("because (a)", (1, "letter")),  # "be" holds b: the reference's quirk, kept
        ("The answer is (c)", (2, "bracketed_letter")),
        ("I pick The grandson", (-1, "unparsed")),  # options as written never match a lower-cased reply
        ("it is not known", (2, "unknown_phrase")),
        ("I cannot answer that", (2, "unknown_phrase")),
        ("", (-1, "unparsed")),
        ("the old man", (-1, "unparsed")),
    ],
)
def test_parse_answer_follows_the_reference_rules(reply: str, expected: tuple[int, str]) -> None:
    parsed = parse_answer(reply, OPTIONS)
    assert (parsed.pred, parsed.rule) == expected


def test_parse_option_text_and_mmlu() -> None:
    lower = ("the grandfather", "the grandson", "unknown")
    assert (
        parse_answer("Well, the grandson did it", lower).pred,
        parse_answer("Well, the grandson did it", lower).rule,
    ) == (1, "option_text")
    mmlu = ("Paris", "London", "Rome", "Oslo")
    assert parse_answer("d", mmlu, option_text=False).pred == 3
    assert (
        parse_answer("I'd say (d)", mmlu, option_text=False).pred,
        parse_answer("I'd say (d)", mmlu, option_text=False).rule,
    ) == (3, "bracketed_letter")
    assert parse_answer("Hmm, it's Paris", mmlu, option_text=False).rule == "unparsed"
    assert parse_counts(["letter", "unparsed", "letter"]) == {
        r: {"letter": 2, "unparsed": 1}.get(r, 0) for r in PARSE_RULES
    }


def test_generate_answers_parses_the_greedy_reply(pair: Any) -> None:
    _, bridge = pair
    prompts = ["Answer with only a single letter.\n(a) x\n(b) y\n(c) z\n", "Q?\n(a) x\n(b) y\n(c) Unknown\n"]
    answers = generate_answers(bridge, prompts, [("x", "y", "z"), ("x", "y", "Unknown")], max_new_tokens=6)
    ref = generate(
        bridge,
        [bridge.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts],
        max_new_tokens=6,
        repetition_penalty=1.1,
    )
    for ans, gen, opts in zip(answers, ref, [("x", "y", "z"), ("x", "y", "Unknown")]):
        assert ans.reply_token_ids == gen.token_ids and ans.reply == gen.text.strip()
        assert (ans.pred, ans.rule) == (parse_answer(gen.text, opts).pred, parse_answer(gen.text, opts).rule)


def test_scoring_generate_in_score_questions(pair: Any) -> None:
    from lens_steer.forward.questions import SCORINGS, Question, letter_prompt
    from lens_steer.forward.scoring import score_questions

    _, bridge = pair
    assert "generate" in SCORINGS
    bbq = Question("The grandfather and the grandson met.", "Who forgot?", OPTIONS)
    mmlu = Question("", "What is 2 + 2?", ("3", "4", "5", "6"), subject="elementary_mathematics")
    scores = score_questions(bridge, [bbq, mmlu], scoring="generate", prompt_format="reference")
    prompts = [letter_prompt(q, range(len(q.options)), "reference", bridge.tokenizer)[0] for q in (bbq, mmlu)]
    direct = generate_answers(bridge, prompts, [bbq.options, mmlu.options], option_text=[True, False])
    for score, ans, prompt in zip(scores, direct, prompts):
        assert (score.prompt, score.pred, score.reply, score.parse_rule) == (prompt, ans.pred, ans.reply, ans.rule)
        assert score.option_token_ids == [ans.reply_token_ids]
    assert prompts[0].count("(c) Can't be determined") == 1 and "Answer with only a single letter." in prompts[1]
    with pytest.raises(LensSteerError, match="--prompt-format reference"):
        score_questions(bridge, [bbq], scoring="generate", prompt_format="lm_eval")
