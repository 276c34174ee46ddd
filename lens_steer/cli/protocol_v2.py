"""`lens-steer protocol-v2`: the later SVE paper's selection (BBQ-derived pairs, PCA, layer then coefficient
on validation) for one or more axes, on its exact splits (`--splits v2`) or ours (`--splits ours`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from lens_steer.cli.examples import with_examples
from lens_steer.cli.loading import load_model_from_args
from lens_steer.cli.options import Subparsers, add_data_option, add_model_option, progress_bar


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "protocol-v2",
        **with_examples(
            "lens-steer protocol-v2 --axes age,religion --splits ours --val-limit 32 --test-limit 64 --out runs/v2",
            "lens-steer protocol-v2 --axes all --splits v2 --out runs/v2-paper",
        ),
        help="the later paper's protocol: one PCA vector per axis, layer then coefficient chosen on validation",
    )
    add_model_option(p)
    add_data_option(p)
    p.add_argument(
        "--axes",
        default="all",
        help="comma-separated v2 axes (age, appearance, disability, gender, nationality, race, religion, "
        "socioeconomic) or all",
    )
    p.add_argument("--splits", default="v2", help="v2 (the paper's exact files, default) or ours (our seeded splits)")
    p.add_argument("--no-train-prompt", action="store_true", help="plain pairs instead of the 'train+prompt' prefix")
    p.add_argument("--layers", default=None, help="layers to sweep (e.g. 10-20; default every layer)")
    p.add_argument(
        "--coeffs", default="-2:2:0.2", help="coefficient grid at the chosen layer (default -2:2:0.2, the paper's)"
    )
    p.add_argument(
        "--scale",
        default="unit",
        help="unit (the paper's unit vectors; default) or contrast (per-layer mean-difference norm)",
    )
    p.add_argument("--scoring", default="cloze", help="cloze (default), letter, letter-calibrated or letter-permuted")
    p.add_argument("--val-limit", type=int, default=None, help="at most N validation items per axis")
    p.add_argument("--test-limit", type=int, default=None, help="at most N test items per axis")
    p.add_argument("--max-pairs", type=int, default=None, help="at most N train pairs per axis (the paper: all 300)")
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument(
        "--out",
        required=True,
        help="output folder: one subfolder per axis (choice.json, layers.csv, coeffs.csv, test.json, "
        "vector.safetensors)",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lens_steer.data.bbq_v2 import V2_AXES, v2_axis
    from lens_steer.extract.activations import SCALES
    from lens_steer.files import write_json
    from lens_steer.forward.questions import SCORINGS, check_choice
    from lens_steer.methods.protocol_v2 import V2_PAPER_BBQ, V2_SPLIT_SOURCES, run_v2_protocol
    from lens_steer.specs import parse_coeffs, parse_layers, parse_names

    check_choice(args.splits, V2_SPLIT_SOURCES, "--splits")
    check_choice(args.scale, SCALES, "--scale")
    check_choice(args.scoring, SCORINGS, "scoring")
    axes = list(V2_AXES) if args.axes == "all" else list(parse_names(args.axes, "--axes", V2_AXES, resolve=v2_axis))
    coeffs = list(parse_coeffs(args.coeffs))
    model = load_model_from_args(args)
    layers = list(parse_layers(args.layers)) if args.layers else None
    out = Path(args.out)
    summary = {}
    for ax in axes:
        n_steps = (len(layers) if layers else int(model.cfg.n_layers)) + len(coeffs)
        update, close = progress_bar(n_steps, f"v2 {ax}")
        try:
            res = run_v2_protocol(
                model,
                ax,
                out / ax,
                splits=args.splits,
                train_prompt=not args.no_train_prompt,
                layers=layers,
                coeffs=coeffs,
                scale=args.scale,
                scoring=args.scoring,
                val_limit=args.val_limit,
                test_limit=args.test_limit,
                max_pairs=args.max_pairs,
                split_seed=args.split_seed,
                seed=args.seed,
                n_boot=args.n_boot,
                max_batch=args.batch_size,
                data_root=args.data_dir,
                progress=update,
            )
        finally:
            close()
        paired = res.test["paired"]["overall"]["acc"]
        summary[ax] = {
            "layer": res.layer,
            "coeff": res.coeff,
            "acc_base": paired["base"]["value"],
            "acc_steered": paired["steered"]["value"],
            "gain": paired["diff"],
            "paper": V2_PAPER_BBQ.get(ax),
        }
        p = V2_PAPER_BBQ.get(ax, {})
        print(
            f"{ax:<14} layer {res.layer:>3} coeff {res.coeff:+.1f}  acc {paired['base']['value']:.3f} -> "
            f"{paired['steered']['value']:.3f} (gain {paired['diff']['value']:+.3f} [{paired['diff']['ci_low']:+.3f}, "
            f"{paired['diff']['ci_high']:+.3f}])  paper: layer {p.get('layer')} coeff {p.get('coeff')}, "
            f"{p.get('baseline')}% -> {p.get('steering')}%"
        )
    write_json(out / "summary.json", {"model": args.model, "splits": args.splits, "axes": summary})
    print(f"wrote {out / 'summary.json'}")
    return 0
