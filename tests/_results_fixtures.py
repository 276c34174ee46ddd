"""Results built from real metric functions (lens_steer.tasks.metrics) in the shape reproduce writes, for the report's
tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np

from lens_steer.pipeline.results import Results
from lens_steer.report.paper import PAPER_AXES
from lens_steer.stats import metrics_to_dict
from lens_steer.tasks.metrics import BbqPrediction, bbq_metrics, paired_comparison

N = 120  # items per axis: 60 ambiguous (label = unknown, index 2), 60 disambiguated (label 1)
NB = 200


# ----------------------------------------------------------------------------- fixtures from real metric functions
def preds(axis: str, correct_ambig: int, correct_disambig: int, unknown_disambig: int = 0) -> list[BbqPrediction]:
    """N predictions: the first `correct_ambig` ambiguous and `correct_disambig` disambiguated ones right;
    wrong disambiguated answers are "unknown" for the first `unknown_disambig` of them, else the biased answer 0."""
    out = []
    for i in range(N):
        amb = i < N // 2
        label = 2 if amb else 1
        k = i if amb else i - N // 2
        if amb:
            pred = 2 if k < correct_ambig else 0
        else:
            wrong = k - correct_disambig
            pred = 1 if k < correct_disambig else (2 if wrong < unknown_disambig else 0)
        out.append(BbqPrediction(i, axis, "ambig" if amb else "disambig", "neg", pred, label, 2, 0, ()))
    return out


def entry(
    base: list[BbqPrediction], steered: list[BbqPrediction], controls: list[list[BbqPrediction]], coeff: float = 1.0
) -> dict[str, Any]:
    """A steered entry in the shape lens_steer.methods.ensemble writes."""
    out = {
        "coeff": coeff,
        "vs_base": metrics_to_dict(paired_comparison(base, steered, n_boot=NB, seed=0)),
        "controls": [
            {
                "seed": s,
                "vs_base": metrics_to_dict(paired_comparison(base, c, n_boot=NB, seed=0)),
                "steered_vs_control": metrics_to_dict(paired_comparison(c, steered, n_boot=NB, seed=0)),
            }
            for s, c in enumerate(controls, 1)
        ],
    }
    accs = [c["vs_base"]["overall"]["acc"]["steered"]["value"] for c in out["controls"]]
    out["control_mean_acc"] = sum(accs) / len(accs) if accs else None
    out["beats_controls"] = (
        all(c["steered_vs_control"]["overall"]["acc"]["diff"]["ci_low"] > 0 for c in out["controls"])
        if out["controls"]
        else None
    )
    return out


# per axis: (correct ambig, correct disambig) of baseline, ISV and SVE; control = baseline
COUNTS = {"base": (10, 30), "isv": (40, 34), "sve": (50, 36), "merged": (12, 30)}


def in_distribution_row(
    axis: str, isv_counts: tuple[int, int] | None = None, control_counts: tuple[int, int] | None = None
) -> dict[str, Any]:
    base = preds(axis, *COUNTS["base"])
    ctrl = preds(axis, *(control_counts or COUNTS["base"]))
    steered = {
        "isv": entry(base, preds(axis, *(isv_counts or COUNTS["isv"])), [ctrl]),
        "sve": entry(base, preds(axis, *COUNTS["sve"]), [ctrl]),
        "merged": entry(base, preds(axis, *COUNTS["merged"]), [ctrl]),
    }
    return {"n": N, "baseline": metrics_to_dict(bbq_metrics(base, n_boot=NB, seed=0)), "steered": steered}


def full_results(rows: dict[str, Any] | None = None) -> dict[str, Any]:
    rows = rows if rows is not None else {a: in_distribution_row(a) for a in PAPER_AXES}
    ood_base = preds("Race_x_gender", 10, 30)
    ood = {
        "Race_x_gender": {
            "n": N,
            "source": "generated",
            "baseline": metrics_to_dict(bbq_metrics(ood_base, n_boot=NB)),
            "steered": {"sve": entry(ood_base, preds("Race_x_gender", 45, 35), [ood_base])},
        },
        "Race_x_SES": {"skipped": "no data"},
    }
    mmlu = {
        "n": 1000,
        "baseline": {"value": 0.30, "ci_low": 0.27, "ci_high": 0.33, "n": 1000},
        "steered": {
            "sve": {
                "coeff": 1.0,
                "acc": {"value": 0.30, "ci_low": 0.27, "ci_high": 0.33, "n": 1000},
                "diff": 0.0,
                "mcnemar": {"p": 1.0, "gained": 1, "lost": 1},
            }
        },
    }
    return {
        "meta": META,
        "capability": {
            a: {
                **{
                    k: r["baseline"][k]
                    for k in (
                        "acc",
                        "acc_ambig",
                        "acc_disambig",
                        "unknown_rate_ambig",
                        "unknown_rate_disambig",
                        "bias_ambig",
                        "bias_disambig",
                    )
                },
                "n": N,
            }
            for a, r in rows.items()
        },
        "isv": {"age": isv_summary("age", [0.3, None, 0.5, 0.4]), "ses": isv_summary("ses", [0.2, 0.25])},
        "ensemble": {
            "config": {"n_boot": NB},
            "axes": list(rows),
            "coefficients": {"sve": 1.0},
            "sweeps": {},
            "in_distribution": rows,
            "ood": ood,
            "mmlu": mmlu,
            "isvs": {},
        },
        "sweep": {
            "axis": "age",
            "layers": [1],
            "coeffs": [-1.0, 0.0, 1.0],
            "metric": "acc",
            "baseline": {
                "kind": "baseline",
                "layer": None,
                "coeff": 0.0,
                "metric": "acc",
                "value": 0.3,
                "ci_low": 0.2,
                "ci_high": 0.4,
            },
            "rows": [
                {
                    "kind": "cell",
                    "layer": 1,
                    "coeff": c,
                    "metric": "acc",
                    "value": 0.3 + c / 10,
                    "ci_low": 0.2,
                    "ci_high": 0.5,
                    "vector_norm": 1.0,
                }
                for c in (-1.0, 0.0, 1.0)
            ],
            "config": {},
        },
        "geometry": {
            "layer": 2,
            "axes": ["age", "ses"],
            "cosine": [[1.0, 0.3], [0.3, 1.0]],
            "random_reference": 0.05,
            "num_sents": 4,
            "method": "mean_diff",
            "persona": 0,
            "template": 0,
        },
    }


META = {
    "model": "test-model",
    "budget": "smoke",
    "seconds": 1.0,
    "stage_seconds": {"isv_search": 0.5},
    "lens_steer_version": "0.1.0",
    "scoring": "cloze",
    "prompt_format": "reference",
    "split_seed": 0,
    "storage": "sqlite:///x.db",
    "bias_variant": "lm_eval",
    "budget_detail": {"name": "smoke"},
}


def isv_summary(axis: str, history: list[float | None]) -> dict[str, Any]:
    """An ISV search's summary as reproduce records it."""
    best = max(v for v in history if v is not None)
    return {
        "study": f"isv-test-{axis}",
        "best_value": best,
        "params": {"layers": "1"},
        "coeff": 1.0,
        "n_trials": len(history),
        "history": history,
        "dir": f"isv/{axis}",
        "baseline": {"objective": 0.3},
    }


def with_logprobs(ps: list[BbqPrediction], seed: int) -> list[BbqPrediction]:
    """The same predictions with seeded option log-probabilities whose argmax is the prediction."""
    rng = np.random.default_rng(seed)
    out = []
    for p in ps:
        lp = rng.normal(size=3) - 2.0
        lp[p.pred] = lp.max() + rng.uniform(0.1, 1.0)
        lp = lp - np.log(np.exp(lp).sum())
        out.append(
            BbqPrediction(
                p.example_id,
                p.category,
                p.context_condition,
                p.question_polarity,
                p.pred,
                p.label,
                p.unknown_index,
                p.biased_index,
                tuple(lp),
            )
        )
    return out


def with_steerability(res: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A copy of `res` with the age axis's ISV steerability and a prompting baseline judged by
    lens_steer.pipeline.evaluate.judged_entry (their per-item margins written under `folder/steerability`)."""
    from lens_steer.pipeline.evaluate import judged_entry
    from lens_steer.pipeline.evaluation_config import EnsembleConfig

    res = copy.deepcopy(res)
    cfg = EnsembleConfig(n_boot=NB)
    base = with_logprobs(preds("age", 10, 30), 0)
    isv = with_logprobs(preds("age", 40, 34), 1)
    prompting = with_logprobs(preds("age", 12, 31), 2)
    row = res["ensemble"]["in_distribution"]["age"]
    isv_entry = judged_entry(base, isv, 1.0, cfg, folder / "steerability" / "age.isv.jsonl")
    row["steered"]["isv"]["steerability"] = isv_entry["steerability"]
    row["steered"]["prompting"] = judged_entry(
        base, prompting, 0.0, cfg, folder / "steerability" / "age.prompting.jsonl"
    )
    return res


def typed(results: dict[str, Any]) -> Results:
    """The typed results of a results.json object."""
    return Results.from_json(results)
