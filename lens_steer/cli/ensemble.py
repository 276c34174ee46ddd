"""`lens-steer ensemble`: Steering Vector Ensembles from ISV runs, judged on the test split with controls."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from lens_steer.cli.examples import with_examples
from lens_steer.cli.loading import load_model_from_args
from lens_steer.cli.options import add_data_option, add_model_option, check_at_least, check_out_folder


def add_parser(subparsers: Any) -> None:
    """Register the `ensemble` subcommand."""
    from lens_steer.forward.questions import SCORINGS

    p = subparsers.add_parser(
        "ensemble",
        **with_examples(
            "lens-steer ensemble --isv runs/age,runs/religion --out runs/sve",
            "lens-steer ensemble --isv runs/age,runs/religion --coeffs=-2,-1,1,2 --test-limit 64 --out runs/sve",
        ),
        help="build SVEs from ISV runs and evaluate them (test split, OOD, MMLU, random controls)",
        description="Average the ISVs (plain, norm-matched, coefficient-weighted), extract the merged-datasets "
        "baseline, pick each coefficient on validation, and judge baseline, ISV, SVE, merged and leave-one-axis-out "
        "SVEs on the test split, each steered result beside matched random controls (and any --baselines beside them, "
        "paired the same way). Writes ensemble.json, results.csv, per-item steerability and the vectors into --out.",
    )
    add_model_option(p)
    add_data_option(p)
    p.add_argument(
        "--isv", required=True, help="comma-separated ISV run folders or isv.safetensors files (one per axis)"
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--coeffs",
        default=None,
        help="SVE coefficients to sweep on validation, e.g. '-5:5:1' or '-2,2' (default: integers -5..5)",
    )
    p.add_argument("--val-limit", type=int, default=None, help="validation items per axis for the sweep (default 100)")
    p.add_argument("--test-limit", type=int, default=None, help="test items per axis (default 300)")
    p.add_argument("--mmlu-items", type=int, default=None, help="MMLU test items for retention (default 200; 0 skips)")
    p.add_argument("--control-seeds", default=None, help="seeds of the matched random controls, e.g. '1,2,3' (default)")
    p.add_argument(
        "--scoring", choices=list(SCORINGS), default=None, help="scoring protocol (use the one the search used)"
    )
    p.add_argument(
        "--generated-dir",
        default=None,
        help="folder of generated BBQ files (the intersectional categories, and --bbq-source generated/mixed)",
    )
    p.add_argument(
        "--bbq-source",
        choices=["official", "generated", "mixed"],
        default=None,
        help="where the axes' BBQ items come from (default: the source the ISV searches used, from their study.json; "
        "else official)",
    )
    p.add_argument("--no-ood", action="store_true", help="skip the intersectional (out-of-distribution) categories")
    p.add_argument("--n-boot", type=int, default=None, help="bootstrap resamples (default 1000)")
    p.add_argument(
        "--baselines",
        default=None,
        help="comma-separated debiasing baselines judged beside the vectors on the same items: prompting, "
        "self-debias-schick, self-debias, finetune (default none)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the ISVs, evaluate, print a short table."""
    from lens_steer.methods.isv import load_isvs, searched_bbq_source
    from lens_steer.pipeline.evaluate import evaluate_ensembles
    from lens_steer.pipeline.evaluation_config import EnsembleConfig
    from lens_steer.specs import parse_coeffs, parse_ints, parse_names

    check_out_folder(args.out)
    for flag in ("val_limit", "test_limit"):
        check_at_least(getattr(args, flag), 1, "--" + flag.replace("_", "-"))
    check_at_least(args.mmlu_items, 0, "--mmlu-items")
    check_at_least(args.n_boot, 0, "--n-boot")
    paths = [Path(p) for p in parse_names(args.isv, "--isv")]
    isvs = load_isvs(paths)  # checks one model before loading it
    overrides: dict[str, Any] = {}
    if args.coeffs:
        overrides["coeffs"] = parse_coeffs(args.coeffs, "--coeffs")
    if args.control_seeds:
        overrides["control_seeds"] = parse_ints(args.control_seeds, "--control-seeds")
    for flag, field in (
        ("val_limit", "val_limit"),
        ("test_limit", "test_limit"),
        ("mmlu_items", "mmlu_items"),
        ("scoring", "scoring"),
        ("generated_dir", "generated_dir"),
        ("n_boot", "n_boot"),
    ):
        if getattr(args, flag) is not None:
            overrides[field] = getattr(args, flag)
    if args.no_ood:
        overrides["ood"] = False
    if args.baselines:
        overrides["baselines"] = parse_names(args.baselines, "--baselines")
    overrides["bbq_source"] = args.bbq_source or searched_bbq_source(isvs)
    config = dataclasses.replace(EnsembleConfig(), **overrides)
    model = load_model_from_args(args)
    isvs = load_isvs(paths, model)
    res = evaluate_ensembles(
        model,
        isvs,
        config,
        args.out,
        data_root=args.data_dir,
        progress=lambda m: print(m, file=sys.stderr, flush=True),
        load_base=lambda: load_model_from_args(args),
    )
    print(f"coefficients chosen on validation: {res['coefficients']}")
    for axis, block in res["in_distribution"].items():
        base = block["baseline"]["acc"]["value"]
        parts = [f"base {base:.3f}"]
        for name, e in block["steered"].items():
            ctrl = e.get("control_mean_acc")
            parts.append(
                f"{name} {e['vs_base']['overall']['acc']['steered']['value']:.3f}"
                + (f" (ctrl {ctrl:.3f})" if ctrl is not None else "")
            )
        print(f"{axis}: " + ", ".join(parts))
    print(f"wrote {Path(args.out) / 'ensemble.json'} and results.csv")
    return 0
