"""Does a one-layer additive fix exist? Fit the optimised vector (BiPO / ReFT-lite) and read its own training items.

Run: python analyses/optimized_fit.py --model smollm2-organism [--axes age,religion] [--layers 8,15,22] ...
Per axis and layer it fits `extract.optimize.fit_optimized_vector` on `--items` train items (gold answer as target on
ambiguous and disambiguated items alike), then scores those **same training items** and `--val` validation items,
unsteered and steered, split by context. If even the items the vector was fitted on keep a gap between ambiguous
accuracy ("unknown") and disambiguated accuracy (the named person), no single vector added at that layer does both:
its failure on held-out items is one of capacity, not of search or overfitting. With `--test N`, the layer whose
validation objective (the study's guarded one: ambiguous accuracy, penalised where disambiguated accuracy falls by
more than the tolerance) is best, if it beats the unsteered model, is then read **once** on N test items, paired
with the unsteered model (95% bootstrap intervals). Writes `optimized_fit.json`.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lens_steer.axes import get_axis
from lens_steer.cli import run_reporting_errors
from lens_steer.cli.loading import load_model_from_args
from lens_steer.cli.options import analysis_parser
from lens_steer.data.select import select
from lens_steer.extract.optimize import OptimizeConfig, fit_optimized_vector
from lens_steer.files import write_json
from lens_steer.forward.questions import Question
from lens_steer.methods.search.objective import objective_value
from lens_steer.methods.search.space import SearchConfig
from lens_steer.stats import metrics_to_dict
from lens_steer.tasks.bbq import bbq_predictions
from lens_steer.tasks.metrics import bbq_metrics, paired_comparison


def accuracy_by_context(preds: Sequence[Any]) -> dict[str, float]:
    """Accuracy on the ambiguous and on the disambiguated items of `preds`."""
    out = {}
    for cond in ("ambig", "disambig"):
        rows = [p for p in preds if p.context_condition == cond]
        out[cond] = sum(p.pred == p.label for p in rows) / len(rows) if rows else float("nan")
    return out


def main(argv: list[str] | None = None) -> int:
    p = analysis_parser(__doc__, "optimized_fit")
    p.add_argument("--axes", default="age,religion")
    p.add_argument("--layers", default="8,15,22")
    p.add_argument("--items", type=int, default=96, help="train items the vector is fitted on (default 96)")
    p.add_argument("--val", type=int, default=32, help="validation items scored (default 32)")
    p.add_argument("--epochs", type=int, default=OptimizeConfig.epochs)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--test", type=int, default=0, help="test items the validation-chosen layer is read on (0: none)")
    args = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(args.out)
    model = load_model_from_args(args)
    config = dataclasses.replace(OptimizeConfig(), epochs=args.epochs, seed=args.seed)
    rows: dict[str, Any] = {}
    t0 = time.time()
    for name in args.axes.split(","):
        axis = get_axis(name).name
        train = select(axis, "train", args.items, seed=args.seed, data_root=args.data_dir)
        val = select(axis, "validation", args.val, seed=args.seed, data_root=args.data_dir)
        base_val_preds = bbq_predictions(model, val)[1]
        base = {
            "train": accuracy_by_context(bbq_predictions(model, train)[1]),
            "val": accuracy_by_context(base_val_preds),
        }
        rows[axis] = {"n_train": len(train), "n_val": len(val), "unsteered": base, "layers": {}}
        data = [(Question(i.context, i.question, tuple(i.answers)), int(i.label)) for i in train]
        guard = SearchConfig(objective="ambig_guarded")
        base_val = bbq_metrics(base_val_preds, n_boot=0)
        base_objective = objective_value(base_val, guard, {"acc_disambig": base_val["acc_disambig"].value})
        fitted = {}
        for layer in (int(x) for x in args.layers.split(",")):
            iv = fit_optimized_vector(model, data, layer, config)
            val_preds = bbq_predictions(model, val, intervention=iv)[1]
            steered = {
                "train": accuracy_by_context(bbq_predictions(model, train, intervention=iv)[1]),
                "val": accuracy_by_context(val_preds),
            }
            value = objective_value(
                bbq_metrics(val_preds, n_boot=0), guard, {"acc_disambig": base_val["acc_disambig"].value}
            )
            fitted[layer] = (iv, value)
            rows[axis]["layers"][str(layer)] = {
                "steered": steered,
                "val_objective": value,
                "final_loss": iv.metadata.provenance["final_loss"],
            }
            print(f"[{time.time() - t0:6.0f}s] {axis} layer {layer}: {steered} (unsteered {base})", file=sys.stderr)
        rows[axis]["val_objective_unsteered"] = base_objective
        best = max(fitted, key=lambda k: fitted[k][1])
        if args.test and fitted[best][1] > base_objective:
            test = select(axis, "test", args.test, seed=args.seed, data_root=args.data_dir)
            plain = bbq_predictions(model, test)[1]
            steered_test = bbq_predictions(model, test, intervention=fitted[best][0])[1]
            paired = metrics_to_dict(paired_comparison(plain, steered_test, n_boot=1000, seed=args.seed))
            rows[axis]["test"] = {"layer": best, "n": len(test), "paired": paired}
            print(f"[{time.time() - t0:6.0f}s] {axis} test, layer {best}: {paired['ambig']['acc']}", file=sys.stderr)
        elif args.test:
            rows[axis]["test"] = {"layer": None, "why": "no layer beat the unsteered model on validation"}
    summary = {
        "axes": rows,
        "config": {**config.to_json(), "items": args.items, "val": args.val, "model": args.model},
    }
    write_json(out / "optimized_fit.json", summary)
    print(f"wrote {out / 'optimized_fit.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors(lambda: main()))
