"""Multiple-choice questions independent of their benchmark, their prompts in each format (the SVE paper's
chat prompt, lm-evaluation-harness's) and what scoring one gives: `Question`, `QuestionScore`, the prompt builders
and the token split of a continuation as lm-eval makes it."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from lens_steer.errors import LensSteerError
from lens_steer.model.chat import render_chat
from lens_steer.model.load import HookedModel
from lens_steer.model.tokens import encode_texts

# Bumped whenever a protocol's prompts, tokenisation or choice sets change; part of every prediction-store key.
# 2: BOS follows the tokenizer's default, continuations split as lm-eval does, lm-eval's MMLU letters, raw
# log-likelihoods.
SCORING_VERSION = 2


SCORINGS = ("cloze", "letter", "letter-calibrated", "letter-permuted", "generate")


DEFAULT_SCORING = "cloze"


PROMPT_FORMATS = ("reference", "lm_eval")


REFERENCE_INSTRUCTION = (
    "Answer with only a single letter.\n\nThe following are multiple choice questions (with answers):\n"
)


@dataclasses.dataclass(frozen=True)
class Question:
    """A multiple-choice question independent of its benchmark: `context` (may be empty), `question`, `options`.

    `answer_of[i]` is the answer that scored option i counts as (None: option i is answer i); it lets a
    choice set hold several phrasings of one answer, as lm-evaluation-harness's BBQ task does."""

    context: str
    question: str
    options: tuple[str, ...]
    subject: str | None = None  # MMLU's subject line in the lm_eval format
    answer_of: tuple[int, ...] | None = None

    @property
    def n_answers(self) -> int:
        """How many distinct answers the options stand for."""
        return len(self.options) if self.answer_of is None else max(self.answer_of) + 1


@dataclasses.dataclass(frozen=True)
class QuestionScore:
    """How one question was scored: the exact prompt and its token ids, the token ids of each scored option,
    per option the raw summed log-likelihood, its token count and the normalised score, and the answer.

    `pred` and `answer_scores` are in answer space (see `Question.answer_of`): an answer's score is the best
    normalised score among its options; `pred_option` is the argmax option itself."""

    prompt: str
    option_token_ids: list[list[int]]
    option_scores: list[float]
    pred: int
    option_scores_per_token: list[float] | None = None
    reply: str | None = None  # scoring "generate": the generated reply, and the rule that parsed it (pred -1: unparsed)
    parse_rule: str | None = None
    prompt_token_ids: list[int] = dataclasses.field(default_factory=list)
    option_logliks: list[float] = dataclasses.field(default_factory=list)
    option_token_counts: list[int] = dataclasses.field(default_factory=list)
    answer_scores: list[float] = dataclasses.field(default_factory=list)
    pred_option: int = 0
    bos: bool = False


def answer_view(q: Question, option_scores: np.ndarray) -> tuple[int, list[float], int]:
    """(answer, per-answer scores, argmax option) from normalised option scores; ties go to the first option."""
    best = int(np.argmax(option_scores))
    if q.answer_of is None:
        return best, [float(x) for x in option_scores], best
    per_answer = [-np.inf] * q.n_answers
    for i, a in enumerate(q.answer_of):
        per_answer[a] = max(per_answer[a], float(option_scores[i]))
    return q.answer_of[best], per_answer, best


def check_choice(value: str, valid: Sequence[str], what: str) -> str:
    """`value` if it is one of `valid`, else a one-line error listing them."""
    if value not in valid:
        raise LensSteerError(f"unknown {what} {value!r}; use one of {', '.join(valid)}")
    return value


def _stem(q: Question) -> str:
    return f"{q.context} {q.question}".strip()


def letter_prompt(q: Question, order: Sequence[int], prompt_format: str, tokenizer: Any) -> tuple[str, list[str]]:
    """The prompt showing options in `order`, and the letter strings whose first tokens are compared."""
    k = len(q.options)
    if prompt_format == "reference":
        letters = [chr(ord("a") + i) for i in range(k)]
        body = _stem(q) + "\n" + "".join(f"({letters[j]}) {q.options[o]}\n" for j, o in enumerate(order))
        return render_chat(tokenizer, None, REFERENCE_INSTRUCTION + body), letters
    letters = [chr(ord("A") + i) for i in range(k)]
    header = (
        f"The following are multiple choice questions (with answers) about {q.subject.replace('_', ' ')}.\n\n"
        if q.subject
        else ""
    )
    stem = f"{q.context}\n\nQ: {q.question}\n" if q.context else f"{q.question.strip()}\n"
    body = "".join(f"{letters[j]}. {q.options[o]}\n" for j, o in enumerate(order))
    return header + stem + body + "Answer:", [" " + letter for letter in letters]


MMLU_LETTERS = ("A", "B", "C", "D")


def cloze_prompt(q: Question, prompt_format: str, tokenizer: Any) -> tuple[str, list[str]]:
    """The prompt and each option's continuation text.

    `lm_eval` follows lm-evaluation-harness's tasks: BBQ "{context}\n\nQ: {question}\nA:" with " " + answer;
    MMLU (a question with a subject) lists the choices and scores " A".." D"."""
    if prompt_format == "reference":
        return render_chat(tokenizer, None, _stem(q)), list(q.options)
    if q.subject is not None:
        header = f"The following are multiple choice questions (with answers) about {q.subject.replace('_', ' ')}.\n\n"
        body = "".join(f"{MMLU_LETTERS[j]}. {opt}\n" for j, opt in enumerate(q.options))
        return header + q.question.strip() + "\n" + body + "Answer:", [
            " " + MMLU_LETTERS[j] for j in range(len(q.options))
        ]
    stem = f"{q.context}\n\nQ: {q.question}\nA:" if q.context else f"{q.question}\nAnswer:"
    return stem, [" " + opt for opt in q.options]


def split_trailing_whitespace(context: str, continuation: str) -> tuple[str, str]:
    """The context without its trailing whitespace and the continuation with it in front (lm-eval's split)."""
    n_spaces = len(context) - len(context.rstrip())
    if not n_spaces:
        return context, continuation
    return context[:-n_spaces], context[-n_spaces:] + continuation


def encode_pair(
    model: HookedModel, context: str, continuation: str, *, move_trailing_whitespace: bool = True
) -> tuple[list[int], list[int]]:
    """Context and continuation token ids as lm-evaluation-harness splits them: the continuation is the whole
    text's ids after the context's, and (with `move_trailing_whitespace`, as lm-eval does) trailing whitespace
    of the context moves to the continuation. A chat-rendered context keeps its assistant header's newline."""
    if move_trailing_whitespace:
        context, continuation = split_trailing_whitespace(context, continuation)
    whole = encode_texts(model, [context + continuation])[0]
    ctx = encode_texts(model, [context])[0]
    return ctx, whole[len(ctx) :]


def first_token(model: HookedModel, text: str) -> int:
    """The first token id of `text` encoded without special tokens (an option letter's token)."""
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not ids:
        raise LensSteerError(f"option label {text!r} encodes to no token")
    return int(ids[0])


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis: raw option scores normalised into option log-probs."""
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
