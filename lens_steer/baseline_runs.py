"""Benchmark runs under a debiasing baseline (BBQ, MMLU, StereoSet): records and metrics in the same
shape as the plain runs of lens_steer.tasks (bbq, mmlu, stereoset), plus the baseline's name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lens_steer.baselines import BASELINES, baseline_bbq_scores, baseline_model, score_questions_with
from lens_steer.tasks.bbq import bbq_record, bbq_result_metrics
from lens_steer.tasks.mmlu import mmlu_question
from lens_steer.tasks.result import BenchResult
from lens_steer.errors import LensSteerError
from lens_steer.scoring import DEFAULT_SCORING, check_choice
from lens_steer.metrics import mmlu_accuracy
from lens_steer.stats import metrics_to_dict
from lens_steer.models import HookedModel
from lens_steer.tasks.stereoset import run_stereoset
from lens_steer.vectors import SteeringVector

BASELINE_BENCHES: tuple[str, ...] = ("bbq", "mmlu", "stereoset")
Progress = Callable[[int], None]


def run_baseline_bench(
    bench: str,
    model: HookedModel,
    items: Sequence[Any],
    method: str,
    *,
    scoring: str = DEFAULT_SCORING,
    prompt_format: str | None = None,
    vector: SteeringVector | None = None,
    coeff: float = 0.0,
    bias_variant: str = "lm_eval",
    blank: str = "paper",
    n_boot: int = 1000,
    seed: int = 0,
    max_batch: int = 16,
    progress: Progress | None = None,
    load_base: Callable[[], HookedModel] | None = None,
    train_texts: Sequence[str] | None = None,
    finetune_seed: int = 0,
) -> BenchResult:
    """Run `bench` on `items` under baseline `method` (see lens_steer.baselines); every record says which.

    `finetune` needs `load_base` and `train_texts` (the positives of the BBQ train pairs)."""
    check_choice(bench, BASELINE_BENCHES, "bench for a baseline")
    check_choice(method, BASELINES, "baseline")
    if method == "self-debias" and bench != "bbq":
        raise LensSteerError(f"the paper's self-debias is a generation protocol on BBQ answers; for {bench} use self-debias-schick")
    scored_model, scoring_method = baseline_model(model, method, load_base=load_base, train_texts=train_texts, seed=finetune_seed)
    if vector is not None and coeff != 0 and method == "finetune":
        vector.check_compatible(scored_model)  # a base-model vector does not fit the fine-tuned model
    if bench == "stereoset":
        res = run_stereoset(scored_model, items, method=scoring_method, blank=blank, vector=vector, coeff=coeff, n_boot=n_boot, seed=seed, max_batch=max_batch, progress=progress)
        return BenchResult(res.bench, [{**r, "baseline": method} for r in res.records], {**res.metrics, "method": method}, res.predictions)
    if bench == "bbq":
        fmt = prompt_format or "reference"
        questions, scores, preds = baseline_bbq_scores(scored_model, items, scoring_method, scoring=scoring, prompt_format=fmt, vector=vector, coeff=coeff, max_batch=max_batch, progress=progress)
        records = [{**bbq_record(it, q, s, p), "baseline": method} for it, q, s, p in zip(items, questions, scores, preds)]
        metrics = {**bbq_result_metrics(preds, items, bias_variant=bias_variant, n_boot=n_boot, seed=seed), "baseline": method}
        return BenchResult("bbq", records, metrics, preds)
    fmt = prompt_format or "lm_eval"
    if scoring_method == "self-debias-schick" and fmt == "lm_eval":
        raise LensSteerError("self-debias-schick on MMLU needs the reference prompt format (its prefixes go before the item text); pass --prompt-format reference")
    questions = [mmlu_question(i) for i in items]
    scores = score_questions_with(scored_model, questions, scoring_method, scoring=scoring, prompt_format=fmt, vector=vector, coeff=coeff, max_batch=max_batch, progress=progress)
    records = [
        {"subject": it.subject, "index": it.index, "prompt": s.prompt, "option_token_ids": s.option_token_ids, "option_scores": s.option_scores,
         "pred": s.pred, "label": it.label, "correct": s.pred == it.label, "baseline": method}
        for it, s in zip(items, scores)
    ]
    acc = mmlu_accuracy([r["correct"] for r in records], [r["subject"] for r in records], n_boot=n_boot, seed=seed)
    return BenchResult("mmlu", records, {**metrics_to_dict(acc), "baseline": method})
