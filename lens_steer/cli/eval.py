"""`lens-steer eval`: score BBQ, MMLU or CrowS-Pairs (optionally steered) and write metrics and predictions."""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from lens_steer.cli.baseline_options import (
    add_baseline_options,
    load_stereoset_items,
    load_v2_bbq_items,
    print_stereoset,
    run_baseline,
)
from lens_steer.cli.examples import with_examples
from lens_steer.cli.loading import load_model_from_args
from lens_steer.cli.options import (
    Subparsers,
    add_data_option,
    add_model_option,
    check_at_least,
    check_out_folder,
    progress_bar,
)
from lens_steer.cli.vector_coeff import add_coeff_option, chosen_coeff, coeff_line
from lens_steer.errors import LensSteerError
from lens_steer.specs import parse_names


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "eval",
        **with_examples(
            "lens-steer eval --bench bbq --categories Age --limit 60 --out runs/eval-age",
            "lens-steer eval --bench bbq --categories Age --limit 60 --vector runs/age/isv.safetensors --out runs/isv",
            "lens-steer eval --bench mmlu --limit 100 --vector age.safetensors --coeff 2 --out runs/mmlu-age",
        ),
        help="evaluate a model on BBQ, MMLU or CrowS-Pairs, optionally steered",
    )
    add_model_option(p)
    add_data_option(p)
    p.add_argument("--bench", required=True, help="bbq, mmlu, crows or stereoset")
    p.add_argument(
        "--categories",
        default=None,
        help="BBQ categories (e.g. Age,Religion), MMLU subjects or CrowS bias types; default all",
    )
    p.add_argument("--split", default="test", help="BBQ split: train, validation, test or all (default test)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the BBQ split (default 0)")
    p.add_argument(
        "--limit", type=int, default=None, help="at most N items (BBQ: whole variant groups), chosen by --seed"
    )
    p.add_argument(
        "--ids",
        default=None,
        help="BBQ: exactly the items named in FILE ('category,example_id' lines), in its order; --split is ignored",
    )
    p.add_argument(
        "--bbq-choices",
        default=None,
        help="BBQ choice set: item (the three answers; default for --prompt-format reference) or lm_eval "
        "(lm-evaluation-harness's two people + ten unknown phrasings; default for --prompt-format lm_eval; cloze only)",
    )
    p.add_argument("--scoring", default=None, help="cloze (default), letter, letter-calibrated or letter-permuted")
    p.add_argument(
        "--prompt-format",
        default=None,
        help="reference (the SVE paper's chat prompt; BBQ default) or lm_eval (MMLU default)",
    )
    p.add_argument(
        "--bbq-source",
        default="official",
        help="official, generated or mixed (generated rows come from --generated-dir)",
    )
    p.add_argument("--generated-dir", default=None, help="folder written by `lens-steer bbq-generate`")
    p.add_argument("--bias-variant", default="lm_eval", help="bias score: lm_eval (default) or helm")
    p.add_argument("--vector", default=None, help="steering vector to apply (any format lens_steer reads)")
    add_coeff_option(p)
    p.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for intervals (default 1000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", required=True, help="output folder: metrics.json and predictions.jsonl")
    add_baseline_options(p)  # --baseline, --blank, --finetune-* (StereoSet and the debiasing baselines)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lens_steer.data.select import limit_bbq, limit_items
    from lens_steer.files import write_json, write_jsonl
    from lens_steer.forward.questions import DEFAULT_SCORING, PROMPT_FORMATS, SCORING_VERSION, SCORINGS, check_choice
    from lens_steer.model.tokens import bos_record
    from lens_steer.steering.vectors import load_vector
    from lens_steer.tasks.bbq import BBQ_CHOICE_SETS, default_bbq_choices
    from lens_steer.tasks.registry import RunOptions, get_task

    task = get_task(args.bench)
    bench = task.name
    check_out_folder(args.out)
    check_at_least(args.limit, 1, "--limit")
    check_at_least(args.batch_size, 1, "--batch-size")
    check_at_least(args.n_boot, 0, "--n-boot")
    if args.coeff is not None and not math.isfinite(args.coeff):
        raise LensSteerError(f"--coeff must be a finite number, got {args.coeff}; write e.g. --coeff 2")
    if args.coeff is not None and not args.vector:
        raise LensSteerError("--coeff scales a steering vector; give --vector too, or leave --coeff out")
    scoring = check_choice(args.scoring or DEFAULT_SCORING, SCORINGS, "scoring")
    cats = list(parse_names(args.categories, "--categories")) if args.categories is not None else None
    if args.ids and bench != "bbq":
        raise LensSteerError("--ids selects BBQ items; leave it out for --bench " + bench)
    prompt_format = check_choice(args.prompt_format or task.default_prompt_format, PROMPT_FORMATS, "prompt format")
    bbq_choices = check_choice(
        args.bbq_choices or default_bbq_choices(prompt_format), BBQ_CHOICE_SETS, "BBQ choice set"
    )
    if bench == "bbq" and bbq_choices == "lm_eval" and scoring != "cloze":
        raise LensSteerError(f"--bbq-choices lm_eval scores answer texts; use it with --scoring cloze, not {scoring}")
    items = _load_items(args, bench, cats)
    items = limit_bbq(items, args.limit, args.seed) if bench == "bbq" else limit_items(items, args.limit, args.seed)
    if not items:
        raise LensSteerError(f"no {bench} items selected; widen --categories, --split or --limit")
    model = load_model_from_args(args)
    vector = load_vector(args.vector, model) if args.vector else None
    coeff, coeff_source = chosen_coeff(args.coeff, vector) if vector is not None else (0.0, None)
    update, close = progress_bar(len(items), f"{bench} {scoring}")
    start = time.perf_counter()
    try:
        if args.baseline:
            result = run_baseline(
                args,
                bench,
                model,
                items,
                scoring=scoring,
                prompt_format=prompt_format,
                vector=vector,
                coeff=coeff,
                progress=update,
            )
        else:
            options = RunOptions(
                scoring=scoring,
                prompt_format=prompt_format,
                bbq_choices=bbq_choices,
                bias_variant=args.bias_variant,
                blank=args.blank,
                vector=vector,
                coeff=coeff,
                n_boot=args.n_boot,
                seed=args.seed,
                max_batch=args.batch_size,
                progress=update,
            )
            result = task.run(model, items, options)
    finally:
        close()
    seconds = time.perf_counter() - start
    out = Path(args.out)
    meta = {
        "model": args.model,
        "bench": bench,
        "scoring": task.fixed_scoring or scoring,
        "prompt_format": prompt_format,
        "bbq_choices": bbq_choices if bench == "bbq" else None,
        "tokenization": bos_record(model),
        "scoring_version": SCORING_VERSION,
        "split": ("ids:" + str(args.ids) if args.ids else args.split) if bench == "bbq" else None,
        "split_seed": args.split_seed,
        "limit": args.limit,
        "seed": args.seed,
        "bbq_source": args.bbq_source if bench == "bbq" else None,
        "vector": args.vector,
        "coeff": coeff,
        "coeff_source": coeff_source,  # --coeff, the vector's stored coefficient, or the default 1
        "n_items": len(items),
        "seconds": round(seconds, 2),
        "items_per_second": round(len(items) / seconds, 3),
        "parse_counts": result.parse_counts,  # generation protocols: answers per parse rule (else None)
    }
    write_jsonl(out / "predictions.jsonl", result.records)
    write_json(out / "metrics.json", {"meta": meta, **result.metrics})
    if vector is not None:
        print(coeff_line(args.vector, coeff, str(coeff_source), vector))
    _print_table(bench, result.metrics, meta)
    print(f"wrote {out / 'metrics.json'} and {out / 'predictions.jsonl'}")
    return 0


def _load_items(args: argparse.Namespace, bench: str, cats: list[str] | None) -> list:
    if bench == "bbq" and args.splits == "v2":
        return load_v2_bbq_items(args, cats)
    if bench == "bbq":
        from lens_steer.data.bbq import load_bbq, read_item_ids, select_ids
        from lens_steer.data.splits import select_split

        ids = read_item_ids(args.ids) if args.ids else None
        if ids is not None and cats is None:
            cats = sorted({c for c, _ in ids})
        items = load_bbq(cats, data_root=args.data_dir, source=args.bbq_source, generated_dir=args.generated_dir)
        if ids is not None:
            return select_ids(items, ids, where=f"--ids {args.ids}")
        return select_split(items, args.split, seed=args.split_seed)
    if bench == "stereoset":
        return load_stereoset_items(args, cats)
    if bench == "mmlu":
        from lens_steer.data.mmlu import load_mmlu

        return load_mmlu("test", subjects=cats, data_root=args.data_dir)
    from lens_steer.data.crows import load_crows

    return load_crows(cats, data_root=args.data_dir)


def _fmt(m: dict) -> str:
    return f"{m['value']:.3f} [{m['ci_low']:.3f}, {m['ci_high']:.3f}] n={m['n']}"


def _print_table(bench: str, metrics: dict, meta: dict) -> None:
    print(
        f"{bench} on {meta['model']} ({meta['scoring']}, {meta['n_items']} items, {meta['items_per_second']} items/s)"
    )
    if bench == "bbq":
        for name in (
            "acc",
            "acc_ambig",
            "acc_disambig",
            "bias_ambig",
            "bias_disambig",
            "unknown_rate_ambig",
            "unknown_rate_disambig",
        ):
            print(f"  {name:<24}{_fmt(metrics['overall'][name])}")
        unparsed = metrics.get("unparsed", {}).get("overall", {})
        if unparsed.get("n"):
            print(f"  {'unparsed (wrong)':<24}{unparsed['n']} of {unparsed['n_items']} ({unparsed['rate']:.3f})")
        for cat, m in metrics["by_category"].items():
            src = metrics["category_source"].get(cat, "")
            print(f"  {cat:<24}acc {_fmt(m['acc'])}  ({src})")
    elif bench == "mmlu":
        print(f"  {'micro acc':<24}{_fmt(metrics['micro'])}")
        print(f"  {'macro acc':<24}{_fmt(metrics['macro'])}")
    elif bench == "stereoset":
        print_stereoset(metrics, _fmt)
    else:
        print(f"  {'stereotype preferred':<24}{_fmt(metrics['overall'])}")
