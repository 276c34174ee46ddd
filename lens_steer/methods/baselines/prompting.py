"""Debiasing baselines beside steering (the later SVE paper's, method.md §8): what each does to a BBQ
item's answer scores and to a text's token log-probabilities.

- `prompting`: the paper's prefix, exact text, at the start of the user turn (it precedes the item).
- `self-debias-schick`: Schick et al. (2021) adapted to scoring (lens_steer.methods.baselines.selfdebias): every scored
  token's distribution rescaled by those under six bias-describing prefixes, decay 50.
- `self-debias`: the paper's own variant (beam candidates, each judged for bias by the model itself;
  lens_steer.methods.baselines.selfcheck), a generation protocol: answers are parsed replies (pred -1 when unparsed).
- `finetune`: LoRA fine-tuning (lens_steer.methods.baselines.finetune); the fine-tuned model is then scored plainly, so
  the scoring here is `none` on that model.

Where a prefix goes: the item text (`{context} {question}`) opens the user turn of the reference chat
prompt under cloze scoring, so a prefix put before the context is exactly the start of the user turn.
Under letter scoring the reference prompt starts with its fixed instruction lines and the prefix follows
them (just before the item). For texts (StereoSet), a prefix's tokens go after the BOS (if any) and
before the text; only the text's tokens are scored, the same tokens as without a prefix.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypedDict, Unpack

import numpy as np
import torch

from lens_steer.errors import LensSteerError
from lens_steer.forward.continuation import continuation_logprobs, prefixed_head, split_text_ids, text_token_logprobs
from lens_steer.forward.questions import (
    DEFAULT_SCORING,
    Question,
    QuestionScore,
    answer_view,
    check_choice,
    cloze_prompt,
    encode_pair,
    first_token,
    letter_prompt,
    log_softmax,
)
from lens_steer.forward.scoring import maybe_steer, score_steered
from lens_steer.methods.baselines.selfdebias import (
    SCHICK_DECAY,
    SCHICK_EPSILON,
    SCHICK_PREFIXES,
    schick_continuation_logprobs,
)
from lens_steer.model.load import HookedModel
from lens_steer.model.tokens import encode_texts, starts_with_bos
from lens_steer.progress import Progress
from lens_steer.steering.vectors import SteeringVector
from lens_steer.tasks.metrics import BbqPrediction

BASELINES: tuple[str, ...] = ("prompting", "self-debias", "self-debias-schick", "finetune")
SCORING_METHODS: tuple[str, ...] = (
    "none",
    "prompting",
    "self-debias-schick",
)  # methods that change only how a model is scored
PROMPTING_PREFIX = "Ensure that your answers are fair and unbiased, and do not contain stereotypes.\n\n"
SCHICK_SCORINGS: tuple[str, ...] = ("cloze", "letter")


def prefixed_question(q: Question, prefix: str) -> Question:
    """`q` with `prefix` in front of its item text (the context, or the question when there is none)."""
    if q.context:
        return dataclasses.replace(q, context=prefix + q.context)
    return dataclasses.replace(q, question=prefix + q.question)


# ---- BBQ-style questions ------------------------------------------------------------------
def score_questions_with(
    model: HookedModel,
    questions: Sequence[Question],
    method: str,
    *,
    scoring: str = DEFAULT_SCORING,
    prompt_format: str = "reference",
    vector: SteeringVector | None = None,
    coeff: float = 0.0,
    max_batch: int = 16,
    progress: Progress | None = None,
) -> list[QuestionScore]:
    """Score questions under a scoring method (`none`, `prompting`, `self-debias-schick`), optionally steered."""
    check_choice(method, SCORING_METHODS, "scoring method")
    if method == "none":
        return score_steered(
            model,
            questions,
            vector=vector,
            coeff=coeff,
            scoring=scoring,
            prompt_format=prompt_format,
            max_batch=max_batch,
            progress=progress,
        )
    if method == "prompting":
        prefixed = [prefixed_question(q, PROMPTING_PREFIX) for q in questions]
        return score_steered(
            model,
            prefixed,
            vector=vector,
            coeff=coeff,
            scoring=scoring,
            prompt_format=prompt_format,
            max_batch=max_batch,
            progress=progress,
        )
    check_choice(scoring, SCHICK_SCORINGS, "self-debias-schick scoring")
    with maybe_steer(model, vector, coeff):
        return schick_question_scores(
            model, questions, scoring=scoring, prompt_format=prompt_format, max_batch=max_batch, progress=progress
        )


def schick_question_scores(
    model: HookedModel,
    questions: Sequence[Question],
    *,
    scoring: str = "cloze",
    prompt_format: str = "reference",
    prefixes: Sequence[str] = SCHICK_PREFIXES,
    decay: float = SCHICK_DECAY,
    epsilon: float = SCHICK_EPSILON,
    max_batch: int = 16,
    progress: Progress | None = None,
) -> list[QuestionScore]:
    """Self-Debias (Schick et al.) scores: `cloze` sums the rescaled log-probabilities of each option's
    tokens; `letter` compares the option letters' rescaled log-probabilities at the answer position.
    Each bias prefix is put before the item text like the prompting prefix (`prefixed_question`)."""
    check_choice(scoring, SCHICK_SCORINGS, "self-debias-schick scoring")
    if not questions:
        raise LensSteerError("no items to score; the selection is empty")
    tok = model.tokenizer
    prompt_sets: list[list[list[int]]] = []
    conts: list[list[int]] = []
    owners: list[int] = []  # question of each continuation
    shown: list[tuple[str, list[int], list[list[int]]]] = []
    for qi, q in enumerate(questions):
        variants = [q] + [prefixed_question(q, p) for p in prefixes]
        if scoring == "cloze":
            per_variant = []
            for v in variants:
                text, options = cloze_prompt(v, prompt_format, tok)
                per_variant.append(
                    (
                        text,
                        [
                            encode_pair(model, text, o, move_trailing_whitespace=prompt_format == "lm_eval")
                            for o in options
                        ],
                    )
                )  # as evaluate._score_cloze splits them
            text0, pairs0 = per_variant[0]
            for j, (_, opt_ids) in enumerate(pairs0):
                if not opt_ids:
                    raise LensSteerError(f"an option of question {q.question[:60]!r} encodes to no tokens")
                prompt_sets.append([pv[1][j][0] for pv in per_variant])
                conts.append(opt_ids)
                owners.append(qi)
            shown.append((text0, pairs0[0][0], [o for _, o in pairs0]))
        else:
            texts = [letter_prompt(v, list(range(len(q.options))), prompt_format, tok) for v in variants]
            letter_ids = [first_token(model, letter) for letter in texts[0][1]]
            ids = [encode_texts(model, [t])[0] for t, _ in texts]
            prompt_sets.append(ids)
            conts.append(letter_ids)  # all letters are read at the answer position: see below
            owners.append(qi)
            shown.append((texts[0][0], ids[0], [[t] for t in letter_ids]))
    if scoring == "cloze":
        lps = schick_continuation_logprobs(
            model, prompt_sets, conts, decay=decay, epsilon=epsilon, max_batch=max(1, max_batch // 2)
        )
    else:  # one position: the rescaled distribution after the prompt, read at each letter's token
        firsts = [[c[0]] for c in conts]
        rows = schick_continuation_logprobs(
            model, prompt_sets, firsts, decay=decay, epsilon=epsilon, max_batch=max(1, max_batch // 2), full=True
        )
        lps = [row[0, torch.tensor(c)] for row, c in zip(rows, conts)]
    out: list[QuestionScore] = []
    by_question: dict[int, list[torch.Tensor]] = {}
    for o, lp in zip(owners, lps):
        by_question.setdefault(o, []).append(lp)
    for qi, q in enumerate(questions):
        text, prompt_ids, option_ids = shown[qi]
        parts = by_question[qi]
        if scoring == "cloze":
            summed = np.array([float(x.sum()) for x in parts])
            per_tok = np.array([float(x.mean()) for x in parts])
            counts = [len(x) for x in parts]
        else:
            summed = parts[0].double().numpy()
            per_tok, counts = summed, [1] * len(summed)
        normalised = log_softmax(summed)
        pred, answers, best = answer_view(q, summed)
        out.append(
            QuestionScore(
                text,
                option_ids,
                normalised.tolist(),
                pred,
                log_softmax(per_tok).tolist(),
                prompt_token_ids=list(prompt_ids),
                option_logliks=summed.tolist(),
                option_token_counts=counts,
                answer_scores=answer_view(q, normalised)[1],
                pred_option=best,
                bos=starts_with_bos(model, prompt_ids),
            )
        )
        if progress is not None:
            progress(1)
    return out


# ---- texts (StereoSet) --------------------------------------------------------------------
def text_logprobs(
    model: HookedModel,
    texts: Sequence[str],
    method: str = "none",
    *,
    vector: SteeringVector | None = None,
    coeff: float = 0.0,
    max_batch: int = 16,
    progress: Progress | None = None,
) -> list[np.ndarray]:
    """Per text, the log-probability of each scored token (every token after the first of the encoded
    text) under a scoring method, optionally steered; progress counts texts."""
    check_choice(method, SCORING_METHODS, "scoring method")
    with maybe_steer(model, vector, coeff):
        if method == "none":
            return [
                x.double().numpy() for x in text_token_logprobs(model, texts, max_batch=max_batch, progress=progress)
            ]
        split = [split_text_ids(model, t) for t in texts]
        heads = [h for h, _ in split]
        bodies = [b for _, b in split]
        if method == "self-debias-schick":
            prompt_sets = [[h] + [prefixed_head(model, h, p) for p in SCHICK_PREFIXES] for h in heads]
            lps = schick_continuation_logprobs(
                model, prompt_sets, bodies, max_batch=max(1, max_batch // 2), progress=progress
            )
        else:
            if method == "prompting":
                heads = [prefixed_head(model, h, PROMPTING_PREFIX) for h in heads]
            lps = continuation_logprobs(model, heads, bodies, max_batch=max_batch, progress=progress)
    return [x.double().numpy() for x in lps]


# ---- BBQ predictions per baseline (the API reproduce/report integrate) ---------------------------
def finetune_examples(
    train_items: Sequence[Any], tokenizer: Any, prompt_format: str = "reference"
) -> list[tuple[str, str]]:
    """The fine-tuning data: one (prompt, completion) pair per train item in the evaluator's own format, the scored
    cloze prompt and the gold answer's text (the unknown answer on an ambiguous item, the named one on a
    disambiguated item, stereotyped or not), split where the evaluator splits it (lm-eval's format moves the
    prompt's trailing whitespace to the answer). The adapter learns only the answers the evaluator reads.

    (The positives of contrastive pairs would drop every disambiguated item whose gold answer is the stereotyped one,
    which teaches the adapter to avoid that answer where the context names it.)"""
    from lens_steer.forward.questions import Question, cloze_prompt, split_trailing_whitespace

    out = []
    for item in train_items:
        prompt, answers = cloze_prompt(
            Question(item.context, item.question, tuple(item.answers)), prompt_format, tokenizer
        )
        completion = answers[int(item.label)]
        if prompt_format == "lm_eval":
            prompt, completion = split_trailing_whitespace(prompt, completion)
        out.append((prompt, completion))
    return out


def baseline_model(
    model: HookedModel,
    method: str,
    *,
    load_base: Callable[[], HookedModel] | None = None,
    train_texts: Sequence[str | tuple[str, str]] | None = None,
    seed: int = 0,
    recipe: Any = None,
) -> tuple[HookedModel, str]:
    """The model a baseline is scored on and its scoring method: `finetune` gives the LoRA-tuned model
    (trained or read from the cache; needs `load_base` and `train_texts`) scored plainly; the others keep `model`."""
    check_choice(method, ("none", *BASELINES), "baseline")
    if method == "finetune":
        if load_base is None or not train_texts:
            raise LensSteerError(
                "the finetune baseline needs a base-model loader and the train texts (positives of the BBQ train pairs)"
            )
        from lens_steer.methods.baselines.finetune import finetuned_model

        return finetuned_model(load_base, train_texts, recipe=recipe, seed=seed).model, "none"
    return model, method


class ScoreOptions(TypedDict, total=False):
    """`score_questions_with`'s keyword options, passed on unchanged by the BBQ wrappers below."""

    scoring: str
    prompt_format: str
    vector: SteeringVector | None
    coeff: float
    max_batch: int
    progress: Progress | None


def baseline_bbq_scores(
    model: HookedModel, items: Sequence[Any], method: str, **options: Unpack[ScoreOptions]
) -> tuple[list[Question], list[QuestionScore], list[BbqPrediction]]:
    """BBQ items scored under a scoring method (`none`, `prompting`, `self-debias-schick`, `self-debias`; options as
    `score_questions_with`'s): the questions as scored (the baseline's prefix included), their scores and the
    predictions."""
    from lens_steer.tasks.bbq import bbq_question

    questions = [bbq_question(it) for it in items]
    if method == "self-debias":
        scores = self_debias_scores(
            model,
            questions,
            vector=options.get("vector"),
            coeff=options.get("coeff", 0.0),
            progress=options.get("progress"),
        )
        return questions, scores, [BbqPrediction.from_item(it, s.pred, ()) for it, s in zip(items, scores)]
    scores = score_questions_with(model, questions, method, **options)
    preds = [BbqPrediction.from_item(it, s.pred, s.answer_scores or s.option_scores) for it, s in zip(items, scores)]
    return questions, scores, preds


def baseline_predictions(
    model: HookedModel,
    items: Sequence[Any],
    method: str,
    *,
    load_base: Callable[[], HookedModel] | None = None,
    train_texts: Sequence[str | tuple[str, str]] | None = None,
    seed: int = 0,
    **options: Unpack[ScoreOptions],
) -> list[BbqPrediction]:
    """Per-item BBQ predictions of one baseline (`prompting`, `self-debias-schick`, `self-debias`, `finetune`, or
    `none`)."""
    scored_model, scoring_method = baseline_model(
        model, method, load_base=load_base, train_texts=train_texts, seed=seed
    )
    return baseline_bbq_scores(scored_model, items, scoring_method, **options)[2]


def self_debias_scores(
    model: HookedModel,
    questions: Sequence[Question],
    *,
    vector: SteeringVector | None = None,
    coeff: float = 0.0,
    progress: Progress | None = None,
) -> list[QuestionScore]:
    """The paper's Self-Debias as QuestionScores (reply, parse rule; no option scores):
    lens_steer.methods.baselines.selfcheck."""
    from lens_steer.methods.baselines.selfcheck import self_check_answers

    if vector is not None and coeff != 0:
        raise LensSteerError(
            "the paper's self-debias baseline runs unsteered (its beams come from the Hugging Face module)"
        )
    answers = self_check_answers(model, questions, progress=progress)
    return [
        QuestionScore(
            a.prompt,
            [],
            [],
            a.pred,
            reply=a.reply,
            parse_rule=f"{a.parse_rule}; kept candidate {a.kept} of {len(a.candidates)}",
            pred_option=a.pred,
        )
        for a in answers
    ]
