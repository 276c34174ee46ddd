"""The positive control with enough items: the study's LoRA fine-tune judged on more test items per planted axis.

Run: python analyses/finetune_control.py --model smollm2-organism [--test 256] [--train-items 48]
The `finetune` baseline of `lens-steer reproduce` (the same examples: every train item of the nine axes, up to
`--train-items` per axis, its gold answer in the evaluator's format; the same recipe and seed, so the adapter is read
from the model cache when the study trained it) is scored on `--test` test items per planted axis, paired with the
unsteered organism, and judged by the study's own planted rules (`pipeline.ground_truth`, no control: a baseline has
none). At `--budget small` a planted axis has 32 disambiguated test items, where one lost answer puts the paired
interval's lower bound near -10 points and no method can show non-inferiority at -5; this asks whether the verdict
changes with the power. Writes `finetune_control.json`.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from lens_steer.axes import AXIS_NAMES
from lens_steer.cli import run_reporting_errors
from lens_steer.cli.loading import load_model_from_args
from lens_steer.cli.options import analysis_parser
from lens_steer.data.select import select
from lens_steer.files import write_json
from lens_steer.methods.baselines.finetune import finetuned_model
from lens_steer.methods.baselines.prompting import finetune_examples
from lens_steer.pipeline.ground_truth import PLANTED_DEFAULT, PLANTED_RULES, cell_numbers, verdict
from lens_steer.pipeline.results_entries import Steered
from lens_steer.stats import metrics_to_dict
from lens_steer.tasks.bbq import bbq_predictions
from lens_steer.tasks.metrics import paired_comparison


def main(argv: list[str] | None = None) -> int:
    p = analysis_parser(__doc__, "finetune_control")
    p.add_argument("--plant", default="age,gender_identity,nationality,religion", help="the planted axes judged")
    p.add_argument("--test", type=int, default=256, help="test items per planted axis (default 256)")
    p.add_argument("--train-items", type=int, default=48, help="train items per axis (the study's finetune_items)")
    p.add_argument("--prompt-format", default="reference")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(args.out)
    t0 = time.time()
    organism = load_model_from_args(args)
    train = [
        it for a in AXIS_NAMES for it in select(a, "train", args.train_items, seed=args.seed, data_root=args.data_dir)
    ]
    examples = finetune_examples(train, organism.tokenizer, args.prompt_format)
    tuned = finetuned_model(lambda: load_model_from_args(args), examples, seed=args.seed)
    print(
        f"[{time.time() - t0:6.0f}s] adapter {tuned.key} ({'trained' if tuned.trained else 'cached'})", file=sys.stderr
    )
    rows: dict[str, Any] = {}
    for axis in args.plant.split(","):
        test = select(axis, "test", args.test, seed=args.seed, data_root=args.data_dir)
        base = bbq_predictions(organism, test, prompt_format=args.prompt_format)[1]
        lora = bbq_predictions(tuned.model, test, prompt_format=args.prompt_format)[1]
        paired = metrics_to_dict(paired_comparison(base, lora, n_boot=1000, seed=args.seed))
        entry = {"coeff": 0.0, "vs_base": paired, "controls": [], "control_mean_acc": None, "beats_controls": None}
        numbers, _ = cell_numbers(Steered.from_json(entry, axis))
        rows[axis] = {
            "n": len(test),
            "verdict": verdict(PLANTED_RULES, numbers, PLANTED_DEFAULT, has_control=False),
            "numbers": numbers,
            "paired": paired,
        }
        print(f"[{time.time() - t0:6.0f}s] {axis} ({len(test)} items): {rows[axis]['verdict']}", file=sys.stderr)
    config = {"test": args.test, "train_items": args.train_items, "seed": args.seed, "model": args.model}
    write_json(out / "finetune_control.json", {"adapter": tuned.key, "axes": rows, "config": config})
    print(f"wrote {out / 'finetune_control.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors(lambda: main()))
