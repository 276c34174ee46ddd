"""The debiasing baselines in the test stage: one scorer per baseline over the axes' test items and MMLU,
through the prediction store, judged like the vectors."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lens_steer.data.select import select
from lens_steer.errors import StudyError
from lens_steer.model.load import HookedModel
from lens_steer.pipeline.evaluation_config import EnsembleConfig
from lens_steer.stats import mcnemar_exact, metrics_to_dict
from lens_steer.tasks.metrics import mmlu_accuracy


def baseline_scorer(
    model: HookedModel,
    axes: Sequence[str],
    config: EnsembleConfig,
    data_root: str | Path | None,
    load_base: Callable[[], HookedModel] | None,
) -> Any:
    """The BaselineScorer of a study; `finetune` learns the gold answers of up to `config.finetune_items` train items
    per axis in the evaluator's format (`finetune_examples`; the v2 splits: the paper's positive texts)."""
    from lens_steer.methods.baselines.prompting import finetune_examples
    from lens_steer.methods.baselines.runs import BaselineScorer

    texts = None
    if "finetune" in config.baselines:
        if load_base is None:
            raise StudyError(
                "the finetune baseline needs a loader of a fresh base model (evaluate_ensembles' load_base)"
            )
        if config.splits == "v2":
            from lens_steer.data.bbq_v2 import load_v2_train_pairs

            texts = [pos for a in axes for pos, _ in load_v2_train_pairs(a, data_root)]
        else:
            texts = finetune_examples(
                [
                    it
                    for a in axes
                    for it in select(
                        a,
                        "train",
                        config.finetune_items,
                        source=config.bbq_source,
                        seed=config.seed,
                        split_seed=config.split_seed,
                        data_root=data_root,
                        generated_dir=config.generated_dir,
                    )
                ],
                model.tokenizer,
                config.prompt_format,
            )
    return BaselineScorer(
        model,
        scoring=config.scoring,
        prompt_format=config.prompt_format,
        max_batch=config.max_batch,
        store_dir=config.store_dir,
        load_base=load_base,
        train_texts=texts,
        finetune_seed=config.seed,
    )


def mmlu_baselines(scorer: Any, items: Sequence[Any], base: Any, config: EnsembleConfig) -> dict[str, Any]:
    """MMLU entries of the baselines that score MMLU (the paper's self-debias is a BBQ protocol here), each paired with
    the unsteered model in the same prompt format (self-debias-schick needs the reference format; the others use
    lm_eval's)."""
    from lens_steer.methods.baselines.runs import MMLU_FORMATS

    out: dict[str, Any] = {}
    for name in (b for b in config.baselines if b in MMLU_FORMATS):
        fmt = MMLU_FORMATS[name]
        rows = scorer.mmlu(items, name, fmt)
        base_rows = base.records if fmt == "lm_eval" else scorer.mmlu(items, "none", fmt)
        acc = mmlu_accuracy(
            [bool(r["correct"]) for r in rows], [r["subject"] for r in rows], n_boot=config.n_boot, seed=config.seed
        )
        base_acc = mmlu_accuracy([bool(r["correct"]) for r in base_rows], [r["subject"] for r in base_rows], n_boot=0)
        b = [bool(r["correct"]) for r in base_rows]
        m = [bool(r["correct"]) for r in rows]
        gained, lost = sum((not x) and y for x, y in zip(b, m)), sum(x and not y for x, y in zip(b, m))
        entry = {
            "coeff": 0.0,
            "acc": metrics_to_dict(acc)["micro"],
            "diff": acc["micro"].value - base_acc["micro"].value,
            "mcnemar": {"p": mcnemar_exact(gained, lost), "gained": gained, "lost": lost},
        }
        if fmt != "lm_eval":
            entry["note"] = (
                f"{fmt} prompt format, paired with the unsteered model in that format (its accuracy "
                f"{base_acc['micro'].value:.3f})"
            )
        out[name] = entry
    return out
