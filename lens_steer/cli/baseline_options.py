"""`lens-steer eval` options for StereoSet and the debiasing baselines (`--bench stereoset`, `--baseline ...`)."""

from __future__ import annotations

import argparse
from typing import Any

from lens_steer.errors import LensSteerError
from lens_steer.specs import parse_names


def add_baseline_options(p: argparse.ArgumentParser) -> None:
    """--baseline, --blank, --finetune-categories, --finetune-seed."""
    p.add_argument(
        "--baseline",
        default=None,
        help="debiasing baseline instead of steering: prompting, self-debias-schick, finetune (self-debias: the "
        "paper's generation variant)",
    )
    p.add_argument(
        "--blank",
        default="paper",
        help="StereoSet intrasentence texts: paper ('{context} {sentence}', the word BLANK kept; default) or sentence "
        "(the filled-in sentence alone)",
    )
    p.add_argument(
        "--finetune-categories",
        default=None,
        help="--baseline finetune: BBQ categories whose train split (--split-seed) gives the texts (default: "
        "--categories for BBQ, else all)",
    )
    p.add_argument("--finetune-seed", type=int, default=0, help="--baseline finetune: training seed (default 0)")
    p.add_argument(
        "--splits",
        default="ours",
        help="BBQ splits: ours (seeded, default) or v2 (the later paper's exact files: --split validation|test per "
        "axis; finetune on its train pairs)",
    )


def load_v2_bbq_items(args: argparse.Namespace, cats: list[str] | None) -> list[Any]:
    """--splits v2: the later paper's validation or test rows of the --categories axes (default all eight)."""
    from lens_steer.data.bbq_v2 import V2_AXES, load_v2_items, v2_axis

    if args.split not in ("validation", "test"):
        raise LensSteerError(
            f"--splits v2 has validation and test rows (its train split is pairs); got --split {args.split}"
        )
    axes = [v2_axis(c) for c in cats] if cats else list(V2_AXES)
    return [it for ax in dict.fromkeys(axes) for it in load_v2_items(ax, args.split, args.data_dir)]


def load_stereoset_items(args: argparse.Namespace, cats: list[str] | None) -> list[Any]:
    """StereoSet items of the --categories bias types (default all four)."""
    from lens_steer.data.stereoset import load_stereoset

    return load_stereoset(cats, data_root=args.data_dir)


def _finetune_examples(args: argparse.Namespace, bench: str, tokenizer: Any) -> list[str | tuple[str, str]]:
    from lens_steer.data.bbq import load_bbq
    from lens_steer.data.splits import select_split
    from lens_steer.methods.baselines.prompting import finetune_examples

    spec = args.finetune_categories or (args.categories if bench == "bbq" else None)
    cats = list(parse_names(spec, "--finetune-categories")) if spec else None
    if args.splits == "v2":  # the paper's 300 train pairs per axis: their positive texts
        from lens_steer.data.bbq_v2 import V2_AXES, load_v2_train_pairs, v2_axis

        axes = [v2_axis(c) for c in cats] if cats else list(V2_AXES)
        return [pos for ax in dict.fromkeys(axes) for pos, _ in load_v2_train_pairs(ax, args.data_dir)]
    train = select_split(load_bbq(cats, data_root=args.data_dir), "train", seed=args.split_seed)
    return finetune_examples(
        train, tokenizer, args.prompt_format if getattr(args, "prompt_format", None) else "reference"
    )


def run_baseline(
    args: argparse.Namespace,
    bench: str,
    model: Any,
    items: list[Any],
    *,
    scoring: str,
    prompt_format: str,
    vector: Any,
    coeff: float,
    progress: Any,
) -> Any:
    """The BenchResult of a `--baseline` run (on bbq, mmlu or stereoset)."""
    from lens_steer.cli.loading import load_model_from_args
    from lens_steer.methods.baselines.runs import BASELINE_BENCHES, run_baseline_bench

    common = dict(
        vector=vector, coeff=coeff, n_boot=args.n_boot, seed=args.seed, max_batch=args.batch_size, progress=progress
    )
    if bench not in BASELINE_BENCHES:
        raise LensSteerError(f"--baseline runs on {', '.join(BASELINE_BENCHES)}; not on {bench}")
    texts = _finetune_examples(args, bench, model.tokenizer) if args.baseline == "finetune" else None
    return run_baseline_bench(
        bench,
        model,
        items,
        args.baseline,
        scoring=scoring,
        prompt_format=prompt_format,
        bias_variant=args.bias_variant,
        blank=args.blank,
        load_base=lambda: load_model_from_args(args),
        train_texts=texts,
        finetune_seed=args.finetune_seed,
        **common,
    )


def print_stereoset(metrics: dict[str, Any], fmt: Any) -> None:
    """SS / LMS / ICAT overall and per type and bias type."""
    for name in ("ss", "lms", "icat"):
        print(f"  {name:<24}{fmt(metrics['overall'][name])}")
    for group in ("by_type", "by_bias_type"):
        for key, m in metrics[group].items():
            print(f"  {key:<24}ICAT {fmt(m['icat'])}  SS {m['ss']['value']:.1f}  LMS {m['lms']['value']:.1f}")
