"""The later SVE paper's "Self-Debias" (method.md §8; lens_steer calls it `self-debias`, not to be confused
with Schick et al.'s, `self-debias-schick`): beam search gives 5 candidate replies (5 beams, up to 20 new
tokens) to the paper's letter prompt; each candidate is shown back to the model as
"{input}{candidate}\\nDoes the above response contain social bias? Answer yes or no." and the first one
judged "no" is kept (the top beam when none is). The kept reply is parsed as the paper's code parses
replies (lens_steer.forward.generation.parse_answer).

Our choices where the paper is silent: beams run on the Hugging Face module inside the bridge
(`generate(num_beams=5, num_return_sequences=5)`, no repetition penalty, no sampling); "{input}" is the
user message of the letter prompt and the judgement question is a new user turn; "no" means the model's
next-token logit for "no"/"No" (with or without a leading space) beats that for "yes"/"Yes".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from lens_steer.errors import LensSteerError, ModelError
from lens_steer.forward.continuation import next_token_logprobs
from lens_steer.forward.generation import parse_answer
from lens_steer.forward.questions import REFERENCE_INSTRUCTION, Question, letter_prompt
from lens_steer.model.chat import render_chat
from lens_steer.model.load import HookedModel
from lens_steer.model.tokens import encode_texts, model_device, pad_id
from lens_steer.progress import Progress

JUDGE_QUESTION = "\nDoes the above response contain social bias? Answer yes or no."
N_BEAMS = 5
N_CANDIDATES = 5
MAX_NEW_TOKENS = 20


@dataclasses.dataclass(frozen=True)
class SelfCheckAnswer:
    """One question: the candidates, whether each was judged biased, the kept reply and its parsed answer
    (-1: unparsed)."""

    prompt: str
    candidates: list[str]
    judged_biased: list[bool]
    kept: int
    reply: str
    pred: int
    parse_rule: str


def user_message(q: Question) -> str:
    """The user turn of the paper's letter prompt for `q` (what "{input}" stands for)."""
    letters = [chr(ord("a") + i) for i in range(len(q.options))]
    body = (
        f"{q.context} {q.question}".strip() + "\n" + "".join(f"({letters[j]}) {o}\n" for j, o in enumerate(q.options))
    )
    return REFERENCE_INSTRUCTION + body


def beam_candidates(
    model: HookedModel,
    prompt: str,
    *,
    n_beams: int = N_BEAMS,
    n_candidates: int = N_CANDIDATES,
    max_new_tokens: int = MAX_NEW_TOKENS,
) -> list[str]:
    """The `n_candidates` best beams' replies to a rendered prompt, best first, special tokens skipped."""
    hf = getattr(model, "original_model", None)
    if hf is None or not hasattr(hf, "generate"):
        raise ModelError(
            "the paper's self-debias baseline beam-searches with the Hugging Face module; this model has none (use a "
            "TransformerBridge)"
        )
    ids = torch.tensor([encode_texts(model, [prompt])[0]], device=model_device(model))
    with torch.inference_mode():
        out = hf.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            num_beams=n_beams,
            num_return_sequences=n_candidates,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad_id(model),
        )
    return [model.tokenizer.decode(row[ids.shape[1] :], skip_special_tokens=True).strip() for row in out]


def _first_ids(model: HookedModel, words: Sequence[str]) -> list[int]:
    out = set()
    for w in words:
        ids = model.tokenizer(w, add_special_tokens=False)["input_ids"]
        if ids:
            out.add(int(ids[0]))
    return sorted(out)


def judged_biased(model: HookedModel, user_input: str, candidates: Sequence[str]) -> list[bool]:
    """For each candidate: does the model answer "yes" (biased) rather than "no" to the judgement question?"""
    yes, no = _first_ids(model, ["yes", "Yes", " yes", " Yes"]), _first_ids(model, ["no", "No", " no", " No"])
    if not yes or not no:
        raise LensSteerError("the tokenizer encodes 'yes' or 'no' to nothing; the self-check cannot be judged")
    prompts = [
        encode_texts(model, [render_chat(model.tokenizer, None, f"{user_input}{c}{JUDGE_QUESTION}")])[0]
        for c in candidates
    ]
    rows = next_token_logprobs(model, prompts, [[yes[0]]] * len(prompts))  # the distribution right after each prompt
    return [bool(r[0, yes].max() >= r[0, no].max()) for r in rows]


def self_check_answers(
    model: HookedModel, questions: Sequence[Question], *, progress: Progress | None = None
) -> list[SelfCheckAnswer]:
    """The paper's Self-Debias on each question (see the module docstring)."""
    out = []
    for q in questions:
        prompt, _ = letter_prompt(q, range(len(q.options)), "reference", model.tokenizer)
        cands = beam_candidates(model, prompt)
        biased = judged_biased(model, user_message(q), cands)
        kept = next((i for i, b in enumerate(biased) if not b), 0)
        parsed = parse_answer(cands[kept], q.options, option_text=q.subject is None)
        out.append(SelfCheckAnswer(prompt, cands, biased, kept, cands[kept], parsed.pred, parsed.rule))
        if progress is not None:
            progress(1)
    return out
