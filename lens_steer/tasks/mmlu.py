"""MMLU as a task: items as four-option questions, scored (optionally steered) into records and micro/macro accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lens_steer.data.mmlu import MmluItem
from lens_steer.forward.questions import DEFAULT_SCORING, Question, QuestionScore
from lens_steer.forward.residual_cache import ResidualCache
from lens_steer.forward.scoring import score_steered
from lens_steer.model.load import HookedModel
from lens_steer.progress import Progress
from lens_steer.stats import metrics_to_dict
from lens_steer.steering.interventions import Intervention
from lens_steer.steering.vectors import SteeringVector
from lens_steer.tasks.metrics import mmlu_accuracy
from lens_steer.tasks.result import BenchResult


def mmlu_question(item: MmluItem) -> Question:
    """An MMLU item as a four-option question with its subject."""
    return Question("", item.question, tuple(item.choices), subject=item.subject)


def run_mmlu(
    model: HookedModel,
    items: Sequence[MmluItem],
    *,
    scoring: str = DEFAULT_SCORING,
    prompt_format: str = "lm_eval",
    vector: SteeringVector | None = None,
    coeff: float = 0.0,
    intervention: Intervention | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    max_batch: int = 16,
    progress: Progress | None = None,
    residual_cache: ResidualCache | None = None,
) -> BenchResult:
    """Score MMLU items (optionally steered): accuracy micro- and macro-averaged over subjects (an unparsed
    reply, pred -1, is wrong; records carry the reply and its parse rule under scoring "generate").

    With `residual_cache`, the residual entering the first steered block is reused across calls on the same items."""
    questions = [mmlu_question(i) for i in items]
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
    return mmlu_result(items, scores, n_boot=n_boot, seed=seed)


def mmlu_record(item: MmluItem, score: QuestionScore) -> dict[str, Any]:
    """One predictions.jsonl row: the item, the exact prompt and token ids, per option the summed log-likelihood,
    token count and normalised score, the reply and its parse rule (generation protocols), and the answer."""
    s = score
    return {
        "subject": item.subject,
        "index": item.index,
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
        "label": item.label,
        "correct": s.pred == item.label,
    }


def mmlu_result(
    items: Sequence[MmluItem], scores: Sequence[QuestionScore], *, n_boot: int = 1000, seed: int = 0
) -> BenchResult:
    """The records and micro/macro accuracy of scored MMLU items."""
    records = [mmlu_record(it, s) for it, s in zip(items, scores)]
    acc = mmlu_accuracy([r["correct"] for r in records], [r["subject"] for r in records], n_boot=n_boot, seed=seed)
    return BenchResult("mmlu", records, metrics_to_dict(acc))
