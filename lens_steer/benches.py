"""Benchmark runs: BBQ, MMLU and CrowS-Pairs items in, per-item records and metrics with intervals out."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from lens_steer.data.bbq import LM_EVAL_UNKNOWN_RESPONSES, BbqItem
from lens_steer.data.crows import CrowsPair
from lens_steer.data.mmlu import MmluItem
from lens_steer.errors import LensSteerError
from lens_steer.evaluate import DEFAULT_SCORING, Progress, Question, QuestionScore, check_choice, maybe_steer, score_steered, sequence_logprobs
from lens_steer.generation import parse_counts
from lens_steer.metrics import BbqPrediction, bbq_metrics, bbq_metrics_by_category, crows_metric, metrics_to_dict, mmlu_accuracy
from lens_steer.models import HookedModel
from lens_steer.prefix import PrefixCache
from lens_steer.vectors import SteeringVector

BENCHES = ("bbq", "mmlu", "crows", "stereoset")  # stereoset: lens_steer.stereoset.run_stereoset


@dataclasses.dataclass(frozen=True)
class BenchResult:
    """One benchmark run: per-item `records` (predictions.jsonl rows) and JSON-ready `metrics`."""

    bench: str
    records: list[dict[str, Any]]
    metrics: dict[str, Any]
    predictions: list[BbqPrediction] | None = None

    @property
    def parse_counts(self) -> dict[str, int] | None:
        """Under a generation protocol, how many answers each parse rule gave (lens_steer.generation.parse_counts);
        None when no record has a parse rule. A rule's note after ";" (self-debias: the kept candidate) is dropped."""
        rules = [str(r["parse_rule"]).split(";", 1)[0] for r in self.records if r.get("parse_rule")]
        return parse_counts(rules) if rules else None


BBQ_CHOICE_SETS = ("item", "lm_eval")


def default_bbq_choices(prompt_format: str) -> str:
    """The choice set a prompt format implies: lm-evaluation-harness's for `lm_eval`, the item's three answers otherwise."""
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
            f"BBQ item {item.category}/{item.example_id}: its unknown answer {item.answers[unk]!r} is not one of lm-eval's "
            "unknown phrasings; score it with --bbq-choices item"
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
        "option_answer": list(question.answer_of) if question.answer_of is not None else list(range(len(question.options))),
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
    max_batch: int = 16,
    progress: Progress | None = None,
    prefix: PrefixCache | None = None,
) -> tuple[list[QuestionScore], list[BbqPrediction]]:
    """Score BBQ items (optionally steered): the scores and the predictions in answer space.

    With `prefix`, the residual entering the first steered block is reused across calls on the same items."""
    choices = bbq_choices or default_bbq_choices(prompt_format)
    if choices == "lm_eval" and scoring != "cloze":
        raise LensSteerError(f"--bbq-choices lm_eval scores answer texts; use it with --scoring cloze, not {scoring}")
    questions = [bbq_question(i, choices) for i in items]
    scores = score_steered(model, questions, vector=vector, coeff=coeff, prefix=prefix, scoring=scoring, prompt_format=prompt_format, max_batch=max_batch, progress=progress)
    return scores, [BbqPrediction.from_item(it, s.pred, s.answer_scores) for it, s in zip(items, scores)]


def mmlu_question(item: MmluItem) -> Question:
    """An MMLU item as a four-option question with its subject."""
    return Question("", item.question, tuple(item.choices), subject=item.subject)


def run_bbq(
    model: HookedModel,
    items: Sequence[BbqItem],
    *,
    scoring: str = DEFAULT_SCORING,
    prompt_format: str = "reference",
    bbq_choices: str | None = None,
    vector: SteeringVector | None = None,
    coeff: float = 0.0,
    bias_variant: str = "lm_eval",
    n_boot: int = 1000,
    seed: int = 0,
    max_batch: int = 16,
    progress: Progress | None = None,
    prefix: PrefixCache | None = None,
) -> BenchResult:
    """Score BBQ items (optionally steered) and compute overall and per-category metrics.

    `bbq_choices`: "item" (the item's three answers) or "lm_eval" (lm-evaluation-harness's twelve choices);
    default from the prompt format (`default_bbq_choices`).

    With `prefix`, the residual entering the first steered block is reused across calls on the same items."""
    choices = bbq_choices or default_bbq_choices(prompt_format)
    scores, preds = bbq_predictions(
        model, items, scoring=scoring, prompt_format=prompt_format, bbq_choices=choices, vector=vector, coeff=coeff, max_batch=max_batch, progress=progress, prefix=prefix
    )
    questions = [bbq_question(i, choices) for i in items]
    records = [bbq_record(it, q, s, p) for it, q, s, p in zip(items, questions, scores, preds)]
    metrics = bbq_result_metrics(preds, items, bias_variant=bias_variant, n_boot=n_boot, seed=seed)
    return BenchResult("bbq", records, metrics, preds)


def bbq_unparsed_counts(preds: Sequence[BbqPrediction]) -> dict[str, Any]:
    """How many answers were unparsed (pred -1; wrong, and outside the bias counts: lens_steer.metrics), as
    {"n", "n_items", "rate"} under "overall", "ambig", "disambig", and per category under "by_category"."""

    def count(ps: Sequence[BbqPrediction]) -> dict[str, Any]:
        n = sum(p.unparsed for p in ps)
        return {"n": n, "n_items": len(ps), "rate": n / len(ps) if ps else 0.0}

    def split(ps: Sequence[BbqPrediction]) -> dict[str, Any]:
        return {"overall": count(ps), **{c: count([p for p in ps if p.context_condition == c]) for c in ("ambig", "disambig")}}

    cats = dict.fromkeys(p.category for p in preds)
    return {**split(preds), "by_category": {c: split([p for p in preds if p.category == c]) for c in cats}}


def bbq_result_metrics(preds: Sequence[BbqPrediction], items: Sequence[BbqItem], *, bias_variant: str = "lm_eval", n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Overall and per-category BBQ metrics, the unparsed answers' counts (`bbq_unparsed_counts`), and each
    category's data source (official/partial/generated)."""
    sources: dict[str, str] = {}
    for it in items:
        sources.setdefault(it.category, it.source)
    return {
        "bias_variant": bias_variant,
        "overall": metrics_to_dict(bbq_metrics(preds, bias_variant=bias_variant, n_boot=n_boot, seed=seed)),
        "by_category": metrics_to_dict(bbq_metrics_by_category(preds, bias_variant=bias_variant, n_boot=n_boot, seed=seed)),
        "unparsed": bbq_unparsed_counts(preds),
        "category_source": sources,
    }


def run_mmlu(
    model: HookedModel,
    items: Sequence[MmluItem],
    *,
    scoring: str = DEFAULT_SCORING,
    prompt_format: str = "lm_eval",
    vector: SteeringVector | None = None,
    coeff: float = 0.0,
    n_boot: int = 1000,
    seed: int = 0,
    max_batch: int = 16,
    progress: Progress | None = None,
    prefix: PrefixCache | None = None,
) -> BenchResult:
    """Score MMLU items (optionally steered): accuracy micro- and macro-averaged over subjects (an unparsed
    reply, pred -1, is wrong; records carry the reply and its parse rule under scoring "generate").

    With `prefix`, the residual entering the first steered block is reused across calls on the same items."""
    questions = [mmlu_question(i) for i in items]
    scores = score_steered(model, questions, vector=vector, coeff=coeff, prefix=prefix, scoring=scoring, prompt_format=prompt_format, max_batch=max_batch, progress=progress)
    records = [
        {
            "subject": it.subject,
            "index": it.index,
            "prompt": s.prompt,
            "prompt_token_ids": s.prompt_token_ids,
            "bos": s.bos,
            "option_token_ids": s.option_token_ids,
            "option_logliks": s.option_logliks,
            "option_token_counts": s.option_token_counts,
            "option_scores": s.option_scores,
            "reply": s.reply,
            "parse_rule": s.parse_rule,
            "pred": s.pred,
            "label": it.label,
            "correct": s.pred == it.label,
        }
        for it, s in zip(items, scores)
    ]
    acc = mmlu_accuracy([r["correct"] for r in records], [r["subject"] for r in records], n_boot=n_boot, seed=seed)
    return BenchResult("mmlu", records, metrics_to_dict(acc))


def run_crows(
    model: HookedModel,
    pairs: Sequence[CrowsPair],
    *,
    vector: SteeringVector | None = None,
    coeff: float = 0.0,
    n_boot: int = 1000,
    seed: int = 0,
    max_batch: int = 16,
    progress: Progress | None = None,
) -> BenchResult:
    """Log-likelihood of each pair's sentences; the share where the more-stereotyping one is more likely."""
    texts = [s for p in pairs for s in (p.sent_more, p.sent_less)]
    with maybe_steer(model, vector, coeff):
        lps = sequence_logprobs(model, texts, max_batch=max_batch, progress=progress)
    more, less = lps[0::2], lps[1::2]
    records = [
        {"index": p.index, "bias_type": p.bias_type, "stereo_antistereo": p.stereo_antistereo, "sent_more": p.sent_more, "sent_less": p.sent_less, "logprob_more": m, "logprob_less": l, "more_preferred": m > l}
        for p, m, l in zip(pairs, more, less)
    ]
    by_type: dict[str, tuple[list[float], list[float]]] = {}
    for r in records:
        a, b = by_type.setdefault(r["bias_type"], ([], []))
        a.append(r["logprob_more"])
        b.append(r["logprob_less"])
    metrics = {
        "overall": metrics_to_dict(crows_metric(more, less, n_boot=n_boot, seed=seed)),
        "by_bias_type": {t: metrics_to_dict(crows_metric(a, b, n_boot=n_boot, seed=seed)) for t, (a, b) in sorted(by_type.items())},
    }
    return BenchResult("crows", records, metrics)
