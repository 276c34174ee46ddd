"""`lens-steer reproduce`: the whole study end to end (baseline, ISV search, SVE, OOD, MMLU, report)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from lens_steer.cli.examples import with_examples
from lens_steer.cli.loading import load_model_from_args
from lens_steer.cli.options import Subparsers, add_data_option, add_model_option, check_out_folder

PROGRESS_LOG = "progress.log"  # every progress line of every run on the folder, appended


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "reproduce",
        **with_examples(
            "lens-steer reproduce --budget smoke --out runs/smoke",
            "lens-steer reproduce --model smollm2-organism --budget small --out runs/organism-small",
        ),
        help="run the SVE study end to end and write report.html, results.md and results.json",
    )
    add_model_option(p)
    add_data_option(p)
    p.add_argument(
        "--budget",
        default="smoke",
        help="smoke (~15 min on 2 CPU cores), small or paper (50 trials per axis; GPU recommended)",
    )
    p.add_argument("--axes", default=None, help="comma-separated axes (default: all nine)")
    p.add_argument(
        "--ground-truth",
        default=None,
        metavar="RUN",
        help="a finished run on the bias model organism (reproduce --model smollm2-organism); its ground-truth "
        "section opens this run's report",
    )
    p.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL (default sqlite:///DIR/optuna.db; postgresql://... for many machines)",
    )
    p.add_argument("--scoring", default=None, help="scoring protocol (default cloze)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--protocol",
        default="sve-v1",
        help="how each axis's vector is chosen: sve-v1 (the Optuna search, default) or v2 (the later paper's: "
        "BBQ-derived train+prompt pairs, PCA, layer at coefficient 1, then coefficient, on validation)",
    )
    p.add_argument(
        "--splits",
        default="ours",
        help="BBQ splits: ours (seeded, default) or v2 (the later paper's exact files; needs --protocol v2). "
        "Either v2 option adds the later paper's table to the report",
    )
    p.add_argument(
        "--baselines",
        default=None,
        help="comma-separated debiasing baselines judged beside the vectors (prompting, self-debias-schick, "
        "self-debias, finetune) or none; default prompting (the paper budget: all four; self-debias-schick costs "
        "about 18 plain evaluations per target)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="run folder; re-running the same command resumes it (one run at a time: the folder is locked)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import optuna

    from lens_steer.axes import AXIS_NAMES, axis_name
    from lens_steer.forward.questions import DEFAULT_SCORING
    from lens_steer.pipeline.budgets import (
        check_same_run,
        check_study_options,
        default_baselines,
        get_budget,
        run_folder_lock,
        v2_axes,
    )
    from lens_steer.pipeline.reproduce import reproduce
    from lens_steer.specs import parse_names

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    budget = get_budget(args.budget)
    v2 = args.protocol == "v2" or args.splits == "v2"
    axes = (
        list(parse_names(args.axes, "--axes", resolve=axis_name))
        if args.axes
        else (v2_axes() if v2 else list(AXIS_NAMES))
    )
    if args.baselines is None:
        from lens_steer.methods.organism.build import card_for_model
        from lens_steer.model.load import ORGANISM_MODEL

        organism = args.model == ORGANISM_MODEL or card_for_model(args.model) is not None
        baselines = list(default_baselines(budget, organism))
    else:
        baselines = [] if args.baselines.strip() == "none" else list(parse_names(args.baselines, "--baselines"))
    check_study_options(args.protocol, args.splits, baselines, axes)
    check_out_folder(args.out)
    check_same_run(
        Path(args.out) / "run.json",
        {
            "budget": budget.to_json(),
            "axes": axes,
            "seed": args.seed,
            "scoring": args.scoring or DEFAULT_SCORING,
            "protocol": args.protocol,
            "splits": args.splits,
        },
    )
    if args.scoring is not None:
        from lens_steer.forward.questions import SCORINGS, check_choice

        check_choice(args.scoring, SCORINGS, "scoring")
    if args.storage is not None:  # an unreachable or malformed storage fails before anything is written
        from lens_steer.methods.search.storage import open_storage

        open_storage(args.storage)
    start = time.perf_counter()
    log_path = Path(args.out) / PROGRESS_LOG

    def say(msg: str) -> None:
        line = f"[{time.perf_counter() - start:6.0f}s] {msg}"
        print(line, file=sys.stderr, flush=True)
        with log_path.open("a") as log:  # the same lines, with the clock, for a run watched later or profiled
            log.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}\n")

    with run_folder_lock(args.out):  # before the model loads: a second run on this folder stops at once
        say(f"loading {args.model}")
        model = load_model_from_args(args)
        from lens_steer.methods.organism.build import card_for_model
        from lens_steer.report.html import write_report

        card = card_for_model(args.model)  # a bias model organism: the report gains a ground-truth section
        original = (card or {}).get("recipe", {}).get("base")  # what it was fine-tuned from: model_diff's reference
        base_args = argparse.Namespace(**{**vars(args), "model": original})
        results = reproduce(
            model,
            budget,
            args.out,
            axes=axes,
            storage=args.storage,
            data_root=args.data_dir,
            seed=args.seed,
            scoring=args.scoring,
            say=say,
            organism=card,
            protocol=args.protocol,
            splits=args.splits,
            baselines=baselines,
            load_base=lambda: load_model_from_args(args),
            report=write_report,
            load_original=(lambda: load_model_from_args(base_args)) if original else None,
            ground_truth_run=args.ground_truth,
        )
    out = Path(args.out)
    print(
        f"done in {results['meta']['seconds']:.0f}s: {out / 'report.html'}, {out / 'results.md'}, "
        f"{out / 'results.json'}"
    )
    return 0
