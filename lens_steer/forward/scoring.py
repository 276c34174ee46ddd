"""Scoring multiple-choice items, each protocol a caller of the forward engine (`engine.run_rows`): rows read
log-probabilities only where scored.

Protocols: `letter` (compare the option letters' logits at the answer position), `letter-calibrated`
(minus each letter's mean preference over the evaluated items), `letter-permuted` (average over the
cyclic orders of the options), `cloze` (summed log-likelihood of each option's text, lm-eval style;
per-token means are kept beside) and `generate` (the SVE paper's: a greedy reply, parsed; `generation`).
Prompt formats: `reference` (the SVE paper's chat prompt) and `lm_eval`. Also `score_steered` (under a vector or
an intervention, reusing a residual cache) and `sequence_logprobs` (CrowS-Pairs' summed text log-probs)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext

import numpy as np

from lens_steer.errors import LensSteerError
from lens_steer.forward.engine import Row, RunPlan, residual_reuse_for, run_rows
from lens_steer.forward.generation import generate_answers
from lens_steer.forward.questions import (
    DEFAULT_SCORING,
    PROMPT_FORMATS,
    SCORINGS,
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
from lens_steer.forward.residual_cache import ResidualCache
from lens_steer.model.load import HookedModel
from lens_steer.model.tokens import encode_texts, starts_with_bos
from lens_steer.progress import Progress
from lens_steer.steering.hooks import steer
from lens_steer.steering.interventions import Intervention, intervention_of
from lens_steer.steering.vectors import SteeringVector

DEFAULT_PLAN = RunPlan()


def score_questions(
    model: HookedModel,
    questions: Sequence[Question],
    *,
    scoring: str = DEFAULT_SCORING,
    prompt_format: str = "reference",
    plan: RunPlan = DEFAULT_PLAN,
    progress: Progress | None = None,
) -> list[QuestionScore]:
    """Score every question with `scoring` under `prompt_format`, the forward run as `plan` says (by default over
    the prefix tree where the model takes a KV cache; with `plan.reuse`, from a stored residual); progress counts
    questions."""
    check_choice(scoring, SCORINGS, "scoring")
    check_choice(prompt_format, PROMPT_FORMATS, "prompt format")
    if not questions:
        raise LensSteerError("no items to score; the selection is empty")
    tok = model.tokenizer
    if scoring == "generate":
        return _score_generated(model, questions, prompt_format, plan.max_batch, progress)
    if scoring == "cloze":
        return _score_cloze(model, questions, prompt_format, plan, progress)
    prompts: list[list[str]] = []
    prompt_ids: list[list[int]] = []
    rows: list[Row] = []
    for q in questions:
        k = len(q.options)
        orders = (
            [list(range(k))] if scoring != "letter-permuted" else [[(j + s) % k for j in range(k)] for s in range(k)]
        )
        texts = []
        for order in orders:
            text, letters = letter_prompt(q, order, prompt_format, tok)
            ids = encode_texts(model, [text])[0]
            rows.append(Row(ids, [len(ids) - 1], candidates=[first_token(model, letter) for letter in letters]))
            texts.append(text)
            if len(texts) == 1:
                prompt_ids.append(ids)
        prompts.append(texts)
    unit = len(questions) / len(rows)
    raw = run_rows(model, rows, plan, progress=progress, progress_unit=unit)
    scores: list[QuestionScore] = []
    r = 0
    per_question: list[np.ndarray] = []
    logliks: list[np.ndarray] = []
    for q in questions:
        k = len(q.options)
        if scoring == "letter-permuted":
            per_question.append(permutation_average(raw[r : r + k]))
            logliks.append(np.mean([[raw[r + s][(o - s) % k] for o in range(k)] for s in range(k)], axis=0))
            r += k
        else:
            per_question.append(log_softmax(raw[r]))
            logliks.append(np.asarray(raw[r], dtype=float))
            r += 1
    if scoring == "letter-calibrated":
        prior = _letter_prior(per_question)
        per_question = [log_softmax(lp - prior[: len(lp)]) for lp in per_question]
    r = 0
    for q, texts, lp, ll, ids0 in zip(questions, prompts, per_question, logliks, prompt_ids):
        ids = [[int(t)] for t in rows[r].candidates or []]  # per option, its letter's token (in the first order shown)
        r += len(texts)
        pred, per_answer, best = answer_view(q, lp)
        scores.append(
            QuestionScore(
                "\n\n".join(texts),
                ids,
                lp.tolist(),
                pred,
                prompt_token_ids=ids0,
                option_logliks=[float(x) for x in ll],
                option_token_counts=[1] * len(lp),
                answer_scores=per_answer,
                pred_option=best,
                bos=starts_with_bos(model, ids0),
            )
        )
    return scores


def _score_generated(
    model: HookedModel, questions: Sequence[Question], prompt_format: str, max_batch: int, progress: Progress | None
) -> list[QuestionScore]:
    """The SVE paper's protocol (`generation`): greedy replies to its letter prompt, parsed as its code parses
    them."""
    if prompt_format != "reference":
        raise LensSteerError("--scoring generate is the SVE paper's protocol; use it with --prompt-format reference")
    prompts = [letter_prompt(q, range(len(q.options)), "reference", model.tokenizer)[0] for q in questions]
    answers = generate_answers(
        model,
        prompts,
        [q.options for q in questions],
        option_text=[q.subject is None for q in questions],
        max_batch=max_batch,
        progress=progress,
    )
    return [
        QuestionScore(
            a.prompt,
            [a.reply_token_ids],
            [],
            a.pred,
            reply=a.reply,
            parse_rule=a.rule,
            prompt_token_ids=a.prompt_token_ids,
            pred_option=a.pred,
            bos=starts_with_bos(model, a.prompt_token_ids),
        )
        for a in answers
    ]


def permutation_average(letter_logits: Sequence[np.ndarray]) -> np.ndarray:
    """Option log-probs averaged over cyclic orders: order s shows option (j + s) % k at letter j."""
    k = len(letter_logits)
    acc = np.zeros(k)
    for s, logits in enumerate(letter_logits):
        lp = log_softmax(np.asarray(logits, dtype=float))
        for j in range(k):
            acc[(j + s) % k] += lp[j] / k
    return log_softmax(acc)


def _letter_prior(per_question: Sequence[np.ndarray]) -> np.ndarray:
    """Mean log-probability of each letter position over the questions (the model's letter preference)."""
    width = max(len(lp) for lp in per_question)
    sums, counts = np.zeros(width), np.zeros(width)
    for lp in per_question:
        sums[: len(lp)] += lp
        counts[: len(lp)] += 1
    return sums / np.maximum(counts, 1)


def _score_cloze(
    model: HookedModel, questions: Sequence[Question], prompt_format: str, plan: RunPlan, progress: Progress | None
) -> list[QuestionScore]:
    """The cloze protocol: one row per option (prompt + option), reading each option token's log-prob."""
    prompts: list[str] = []
    prompt_ids: list[list[int]] = []
    cont_ids: list[list[list[int]]] = []
    for q in questions:
        text, conts = cloze_prompt(q, prompt_format, model.tokenizer)
        pairs = [encode_pair(model, text, c, move_trailing_whitespace=prompt_format == "lm_eval") for c in conts]
        opts = [o for _, o in pairs]
        if any(not o for o in opts):
            raise LensSteerError(f"an option of question {q.question[:60]!r} encodes to no tokens")
        prompts.append(text)
        prompt_ids.append(pairs[0][0])
        cont_ids.append(opts)
    rows = [
        Row(p + o, list(range(len(p) - 1, len(p) - 1 + len(o))), targets=o)
        for p, opts in zip(prompt_ids, cont_ids)
        for o in opts
    ]
    flat = run_rows(model, rows, plan, progress=progress, progress_unit=len(questions) / len(rows))
    raw, r = [], 0
    for opts in cont_ids:
        raw.append(flat[r : r + len(opts)])
        r += len(opts)
    scores = []
    for q, text, ids0, opts, lps in zip(questions, prompts, prompt_ids, cont_ids, raw):
        summed = np.array([float(x.sum()) for x in lps])
        per_tok = np.array([float(x.mean()) for x in lps])
        normalised = log_softmax(summed)
        pred, _, best = answer_view(q, summed)
        scores.append(
            QuestionScore(
                text,
                opts,
                normalised.tolist(),
                pred,
                log_softmax(per_tok).tolist(),
                prompt_token_ids=ids0,
                option_logliks=summed.tolist(),
                option_token_counts=[len(o) for o in opts],
                answer_scores=answer_view(q, normalised)[1],
                pred_option=best,
                bos=starts_with_bos(model, ids0),
            )
        )
    return scores


@contextmanager
def maybe_steer(
    model: HookedModel,
    vector: SteeringVector | None = None,
    coeff: float = 0.0,
    *,
    intervention: Intervention | None = None,
) -> Iterator[None]:
    """Apply `intervention` (or `coeff * vector`) inside the block, or do nothing without one or at coeff 0."""
    active = intervention_of(vector, coeff, intervention)
    with steer(model, active) if active is not None else nullcontext():
        yield


def score_steered(
    model: HookedModel,
    questions: Sequence[Question],
    *,
    vector: SteeringVector | None = None,
    coeff: float = 0.0,
    intervention: Intervention | None = None,
    residual_cache: ResidualCache | None = None,
    scoring: str = DEFAULT_SCORING,
    prompt_format: str = "reference",
    max_batch: int = 16,
    progress: Progress | None = None,
    prefix_tree: bool = True,
) -> list[QuestionScore]:
    """`score_questions` under `intervention` (or `coeff * vector`); with `residual_cache`, the residual entering
    the first edited block is reused across calls on the same questions; `prefix_tree` and `max_batch` as in
    `RunPlan`."""
    active = intervention_of(vector, coeff, intervention)
    reuse = residual_reuse_for(model, residual_cache, active)
    plan = RunPlan(prefix_tree=prefix_tree, max_batch=max_batch, reuse=reuse)
    with maybe_steer(model, intervention=active):
        return score_questions(
            model, questions, scoring=scoring, prompt_format=prompt_format, plan=plan, progress=progress
        )


def sequence_logprobs(
    model: HookedModel,
    texts: Sequence[str],
    *,
    max_batch: int = 16,
    max_tokens: int = 3072,
    progress: Progress | None = None,
) -> list[float]:
    """Summed log-probability of each text's tokens after the first (CrowS-Pairs)."""
    rows = []
    for ids in encode_texts(model, texts):
        if len(ids) < 2:
            raise LensSteerError("a text needs at least two tokens to be scored")
        rows.append(Row(ids, list(range(len(ids) - 1)), targets=ids[1:]))
    plan = RunPlan(prefix_tree=False, max_batch=max_batch, max_tokens=max_tokens)
    return [float(x.sum()) for x in run_rows(model, rows, plan, progress=progress)]
