"""Benchmark runs under a debiasing baseline (BBQ, MMLU, StereoSet): records and metrics in the same
shape as the plain runs of lens_steer.tasks (bbq, mmlu, stereoset), plus the baseline's name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from lens_steer.errors import LensSteerError
from lens_steer.forward.questions import DEFAULT_SCORING, check_choice
from lens_steer.methods.baselines.prompting import (
    BASELINES,
    baseline_bbq_scores,
    baseline_model,
    score_questions_with,
    text_logprobs,
)
from lens_steer.model.load import HookedModel
from lens_steer.progress import Progress
from lens_steer.steering.vectors import SteeringVector
from lens_steer.tasks.bbq import bbq_record, bbq_result_metrics
from lens_steer.tasks.metrics import BbqPrediction
from lens_steer.tasks.mmlu import mmlu_question, mmlu_result
from lens_steer.tasks.registry import RunOptions, get_task
from lens_steer.tasks.result import BenchResult
from lens_steer.tasks.stereoset import run_stereoset


def _stereoset(model: HookedModel, items: Sequence[Any], scoring_method: str, o: RunOptions) -> BenchResult:
    """StereoSet scored under a baseline's scoring method (the texts' log-probabilities through it)."""
    scorer = (
        None
        if scoring_method == "none"
        else (
            lambda texts, prog: text_logprobs(
                model, texts, scoring_method, vector=o.vector, coeff=o.coeff, max_batch=o.max_batch, progress=prog
            )
        )
    )
    return run_stereoset(
        model,
        items,
        method=scoring_method,
        blank=o.blank,
        vector=o.vector,
        coeff=o.coeff,
        n_boot=o.n_boot,
        seed=o.seed,
        max_batch=o.max_batch,
        progress=o.progress,
        text_scorer=scorer,
    )


def _bbq(model: HookedModel, items: Sequence[Any], scoring_method: str, o: RunOptions) -> BenchResult:
    """BBQ scored under a baseline's scoring method: the plain run's records and metrics."""
    questions, scores, preds = baseline_bbq_scores(
        model,
        items,
        scoring_method,
        scoring=o.scoring,
        prompt_format=o.prompt_format or get_task("bbq").default_prompt_format,
        vector=o.vector,
        coeff=o.coeff,
        max_batch=o.max_batch,
        progress=o.progress,
    )
    records = [bbq_record(it, q, s, p) for it, q, s, p in zip(items, questions, scores, preds)]
    metrics = bbq_result_metrics(preds, items, bias_variant=o.bias_variant, n_boot=o.n_boot, seed=o.seed)
    return BenchResult("bbq", records, metrics, preds)


def _mmlu(model: HookedModel, items: Sequence[Any], scoring_method: str, o: RunOptions) -> BenchResult:
    """MMLU scored under a baseline's scoring method: the plain run's records and accuracy."""
    fmt = o.prompt_format or get_task("mmlu").default_prompt_format
    if scoring_method == "self-debias-schick" and fmt == "lm_eval":
        raise LensSteerError(
            "self-debias-schick on MMLU needs the reference prompt format (its prefixes go before the item text); "
            "pass --prompt-format reference"
        )
    scores = score_questions_with(
        model,
        [mmlu_question(i) for i in items],
        scoring_method,
        scoring=o.scoring,
        prompt_format=fmt,
        vector=o.vector,
        coeff=o.coeff,
        max_batch=o.max_batch,
        progress=o.progress,
    )
    return mmlu_result(items, scores, n_boot=o.n_boot, seed=o.seed)


# bench -> its run under a baseline's scoring method (the benches of lens_steer.tasks.registry a baseline runs on)
BASELINE_RUNS: dict[str, Callable[[HookedModel, Sequence[Any], str, RunOptions], BenchResult]] = {
    "bbq": _bbq,
    "mmlu": _mmlu,
    "stereoset": _stereoset,
}
BASELINE_BENCHES: tuple[str, ...] = tuple(BASELINE_RUNS)


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
    train_texts: Sequence[str | tuple[str, str]] | None = None,
    finetune_seed: int = 0,
) -> BenchResult:
    """Run `bench` on `items` under baseline `method` (see lens_steer.methods.baselines.prompting); every record says
    which.

    `finetune` needs `load_base` and `train_texts` (the positives of the BBQ train pairs)."""
    check_choice(get_task(bench).name, BASELINE_BENCHES, "bench for a baseline")
    check_choice(method, BASELINES, "baseline")
    if method == "self-debias" and bench != "bbq":
        raise LensSteerError(
            f"the paper's self-debias is a generation protocol on BBQ answers; for {bench} use self-debias-schick"
        )
    scored_model, scoring_method = baseline_model(
        model, method, load_base=load_base, train_texts=train_texts, seed=finetune_seed
    )
    if vector is not None and coeff != 0 and method == "finetune":
        vector.check_compatible(scored_model)  # a base-model vector does not fit the fine-tuned model
    options = RunOptions(
        scoring=scoring,
        prompt_format=prompt_format,
        bias_variant=bias_variant,
        blank=blank,
        vector=vector,
        coeff=coeff,
        n_boot=n_boot,
        seed=seed,
        max_batch=max_batch,
        progress=progress,
    )
    res = BASELINE_RUNS[bench](scored_model, items, scoring_method, options)
    named = "method" if bench == "stereoset" else "baseline"  # StereoSet's metrics name their scoring "method"
    return BenchResult(
        res.bench, [{**r, "baseline": method} for r in res.records], {**res.metrics, named: method}, res.predictions
    )


# ---- the study's baselines (ensemble / reproduce): predictions through the prediction store ----------------
MMLU_FORMATS: dict[str, str] = {
    "prompting": "lm_eval",
    "finetune": "lm_eval",
    "self-debias-schick": "reference",
}  # the paper's self-debias is BBQ-only


class BaselineScorer:
    """Scores a study's BBQ and MMLU items under each debiasing baseline, every result read from / written to the
    prediction store under `store_dir` when one is given (keyed by the model, the baseline, scoring and prompt
    format; for `finetune` also the adapter's cache key, so a stored result needs no training). The fine-tuned
    model is built (or read from its cache) once, on first use."""

    def __init__(
        self,
        model: HookedModel,
        *,
        scoring: str = DEFAULT_SCORING,
        prompt_format: str = "reference",
        max_batch: int = 16,
        store_dir: str | None = None,
        load_base: Callable[[], HookedModel] | None = None,
        train_texts: Sequence[str | tuple[str, str]] | None = None,
        finetune_seed: int = 0,
    ) -> None:
        self.model = model
        self.scoring = scoring
        self.prompt_format = prompt_format
        self.max_batch = max_batch
        self.store_dir = store_dir
        self.load_base = load_base
        self.train_texts = list(train_texts) if train_texts is not None else None
        self.finetune_seed = finetune_seed
        self._tuned: HookedModel | None = None

    def _scored(self, method: str) -> tuple[HookedModel, str]:
        if method != "finetune":
            return baseline_model(self.model, method)
        if self._tuned is None:
            self._tuned = baseline_model(
                self.model, "finetune", load_base=self.load_base, train_texts=self.train_texts, seed=self.finetune_seed
            )[0]
        return self._tuned, "none"

    def _settings(self, method: str, prompt_format: str, bench: str) -> dict[str, Any]:
        from lens_steer.tasks.store import prediction_settings

        out = prediction_settings(
            self.model, self.scoring, prompt_format, baseline=method, **({} if bench == "bbq" else {"benchmark": bench})
        )
        if method == "finetune":
            from lens_steer.methods.baselines.finetune import LoraRecipe, finetune_key

            if not self.train_texts:
                raise LensSteerError("the finetune baseline needs the train texts (positives of the BBQ train pairs)")
            out["finetune_key"] = finetune_key(self.model, self.train_texts, LoraRecipe(), self.finetune_seed)
        return out

    def bbq(self, items: Sequence[Any], method: str) -> list[BbqPrediction]:
        """Per-item BBQ predictions of `method` (one of BASELINES, or "none")."""
        check_choice(method, ("none", *BASELINES), "baseline")

        def compute() -> list[BbqPrediction]:
            scored_model, scoring_method = self._scored(method)
            return baseline_bbq_scores(
                scored_model,
                items,
                scoring_method,
                scoring=self.scoring,
                prompt_format=self.prompt_format,
                max_batch=self.max_batch,
            )[2]

        from lens_steer.tasks.store import through_store

        return through_store(
            self.store_dir, "bbq", items, None, 0.0, lambda: self._settings(method, self.prompt_format, "bbq"), compute
        )

    def mmlu(self, items: Sequence[Any], method: str, prompt_format: str) -> list[dict[str, Any]]:
        """Per-item MMLU records (subject, index, pred, label, correct) of `method` (or "none") in `prompt_format`."""
        check_choice(method, ("none", *MMLU_FORMATS), "baseline on MMLU")
        from lens_steer.tasks.store import through_store

        def compute() -> list[dict[str, Any]]:
            scored_model, scoring_method = self._scored(method)
            questions = [mmlu_question(i) for i in items]
            scores = score_questions_with(
                scored_model,
                questions,
                scoring_method,
                scoring=self.scoring,
                prompt_format=prompt_format,
                max_batch=self.max_batch,
            )
            return [
                {
                    "subject": it.subject,
                    "index": it.index,
                    "pred": s.pred,
                    "label": it.label,
                    "correct": s.pred == it.label,
                    "baseline": method,
                }
                for it, s in zip(items, scores)
            ]

        return through_store(
            self.store_dir, "mmlu", items, None, 0.0, lambda: self._settings(method, prompt_format, "mmlu"), compute
        )
