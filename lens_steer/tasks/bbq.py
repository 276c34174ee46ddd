"""BBQ as a task: items as questions (their three answers, or lm-evaluation-harness's twelve choices), the one
prediction path every study uses (`bbq_predictions`), per-item records, and metrics with intervals (`run_bbq`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lens_steer.data.bbq import LM_EVAL_UNKNOWN_RESPONSES, BbqItem
from lens_steer.errors import LensSteerError
from lens_steer.forward.questions import DEFAULT_SCORING, Question, QuestionScore, check_choice
from lens_steer.forward.residual_cache import ResidualCache
from lens_steer.forward.scoring import score_steered
from lens_steer.model.load import HookedModel
from lens_steer.progress import Progress
from lens_steer.stats import metrics_to_dict
from lens_steer.steering.interventions import Intervention
from lens_steer.steering.vectors import SteeringVector
from lens_steer.tasks.metrics import BbqPrediction, bbq_metrics, bbq_metrics_by_category
from lens_steer.tasks.result import BenchResult

BBQ_CHOICE_SETS = ("item", "lm_eval")


def default_bbq_choices(prompt_format: str) -> str:
    """The choice set a prompt format implies: lm-evaluation-harness's for `lm_eval`, the item's three answers
    otherwise."""
    return "lm_eval" if prompt_format == "lm_eval" else "item"


def bbq_question(item: BbqItem, choices: str = "item") -> Question:
    """A BBQ item as a question: its three answers (`item`), or lm-evaluation-harness's choice set (`lm_eval`:
    the two people in the item's order, then its ten unknown phrasings, each counting as the unknown answer)."""
    if choices == "item":
        return Question(item.context, item.question, tuple(item.answers))
    check_choice(choices, BBQ_CHOICE_SETS, "BBQ choice set")
    unk = item.unknown_index
    if item.answers[unk] not in LM_EVAL_UNKNOWN_RESPONSES:
        raise LensSteerError(
            f"BBQ item {item.category}/{item.example_id}: its unknown answer {item.answers[unk]!r} is not one of "
            "lm-eval's unknown phrasings; score it with --bbq-choices item"
        )
    people = [i for i in range(3) if i != unk]
    options = tuple(item.answers[i] for i in people) + LM_EVAL_UNKNOWN_RESPONSES
    answer_of = tuple(people) + (unk,) * len(LM_EVAL_UNKNOWN_RESPONSES)
    return Question(item.context, item.question, options, answer_of=answer_of)


def bbq_record(item: BbqItem, question: Question, score: QuestionScore, pred: BbqPrediction) -> dict[str, Any]:
    """One predictions.jsonl row: the item, the exact prompt and token ids, per scored option the raw summed
    log-likelihood, token count and normalised score, and the answer (generation protocols: the reply and
    the rule that parsed it, pred -1 when none did; None otherwise)."""
    return {
        "example_id": item.example_id,
        "category": item.category,
        "source": item.source,
        "context_condition": item.context_condition,
        "question_polarity": item.question_polarity,
        "prompt": score.prompt,
        "prompt_token_ids": score.prompt_token_ids,
        "bos": score.bos,
        "options": list(question.options),
        "option_answer": list(question.answer_of)
        if question.answer_of is not None
        else list(range(len(question.options))),
        "option_token_ids": score.option_token_ids,
        "option_logliks": score.option_logliks,
        "option_token_counts": score.option_token_counts,
        "option_scores": score.option_scores,
        "option_scores_per_token": score.option_scores_per_token,
        "answer_scores": score.answer_scores,
        "pred_option": score.pred_option,
        "reply": score.reply,
        "parse_rule": score.parse_rule,
        "pred": score.pred,
        "unparsed": pred.unparsed,
        "label": item.label,
        "unknown_index": item.unknown_index,
        "biased_index": item.biased_index,
        "biased_indices": list(item.biased_indices),
        "pred_is_unknown": pred.pred_is_unknown,
        "pred_is_biased": pred.pred_is_biased,
    }


def bbq_predictions(
    model: HookedModel,
    items: Sequence[BbqItem],
    *,
    scoring: str = DEFAULT_SCORING,
    prompt_format: str = "reference",
    bbq_choices: str | None = None,
    vector: SteeringVector | None = None,
    coeff: float = 0.0,
    intervention: Intervention | None = None,
    max_batch: int = 16,
    progress: Progress | None = None,
    residual_cache: ResidualCache | None = None,
) -> tuple[list[QuestionScore], list[BbqPrediction]]:
    """Score BBQ items (optionally steered): the scores and the predictions in answer space.

    With `residual_cache`, the residual entering the first steered block is reused across calls on the same items."""
    choices = bbq_choices or default_bbq_choices(prompt_format)
    if choices == "lm_eval" and scoring != "cloze":
        raise LensSteerError(f"--bbq-choices lm_eval scores answer texts; use it with --scoring cloze, not {scoring}")
    questions = [bbq_question(i, choices) for i in items]
    scores = score_steered(
        model,
        questions,
        vector=vector,
        coeff=coeff,
        intervention=intervention,
        residual_cache=residual_cache,
        scoring=scoring,
        prompt_format=prompt_format,
        max_batch=max_batch,
        progress=progress,
    )
    return scores, [BbqPrediction.from_item(it, s.pred, s.answer_scores) for it, s in zip(items, scores)]


def run_bbq(
    model: HookedModel,
    items: Sequence[BbqItem],
    *,
    scoring: str = DEFAULT_SCORING,
    prompt_format: str = "reference",
    bbq_choices: str | None = None,
    vector: SteeringVector | None = None,
    coeff: float = 0.0,
    intervention: Intervention | None = None,
    bias_variant: str = "lm_eval",
    n_boot: int = 1000,
    seed: int = 0,
    max_batch: int = 16,
    progress: Progress | None = None,
    residual_cache: ResidualCache | None = None,
) -> BenchResult:
    """Score BBQ items (optionally steered) and compute overall and per-category metrics.

    `bbq_choices`: "item" (the item's three answers) or "lm_eval" (lm-evaluation-harness's twelve choices);
    default from the prompt format (`default_bbq_choices`).

    With `residual_cache`, the residual entering the first steered block is reused across calls on the same items."""
    choices = bbq_choices or default_bbq_choices(prompt_format)
    scores, preds = bbq_predictions(
        model,
        items,
        scoring=scoring,
        prompt_format=prompt_format,
        bbq_choices=choices,
        vector=vector,
        coeff=coeff,
        intervention=intervention,
        max_batch=max_batch,
        progress=progress,
        residual_cache=residual_cache,
    )
    questions = [bbq_question(i, choices) for i in items]
    records = [bbq_record(it, q, s, p) for it, q, s, p in zip(items, questions, scores, preds)]
    metrics = bbq_result_metrics(preds, items, bias_variant=bias_variant, n_boot=n_boot, seed=seed)
    return BenchResult("bbq", records, metrics, preds)


def bbq_unparsed_counts(preds: Sequence[BbqPrediction]) -> dict[str, Any]:
    """How many answers were unparsed (pred -1; wrong, and outside the bias counts: lens_steer.tasks.metrics), as
    {"n", "n_items", "rate"} under "overall", "ambig", "disambig", and per category under "by_category"."""

    def count(ps: Sequence[BbqPrediction]) -> dict[str, Any]:
        n = sum(p.unparsed for p in ps)
        return {"n": n, "n_items": len(ps), "rate": n / len(ps) if ps else 0.0}

    def split(ps: Sequence[BbqPrediction]) -> dict[str, Any]:
        return {
            "overall": count(ps),
            **{c: count([p for p in ps if p.context_condition == c]) for c in ("ambig", "disambig")},
        }

    cats = dict.fromkeys(p.category for p in preds)
    return {**split(preds), "by_category": {c: split([p for p in preds if p.category == c]) for c in cats}}


def bbq_result_metrics(
    preds: Sequence[BbqPrediction],
    items: Sequence[BbqItem],
    *,
    bias_variant: str = "lm_eval",
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Overall and per-category BBQ metrics, the unparsed answers' counts (`bbq_unparsed_counts`), and each
    category's data source (official/partial/generated)."""
    sources: dict[str, str] = {}
    for it in items:
        sources.setdefault(it.category, it.source)
    return {
        "bias_variant": bias_variant,
        "overall": metrics_to_dict(bbq_metrics(preds, bias_variant=bias_variant, n_boot=n_boot, seed=seed)),
        "by_category": metrics_to_dict(
            bbq_metrics_by_category(preds, bias_variant=bias_variant, n_boot=n_boot, seed=seed)
        ),
        "unparsed": bbq_unparsed_counts(preds),
        "category_source": sources,
    }
