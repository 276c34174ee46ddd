"""`lens-steer sweep`: BBQ validation metric over steered layer x coefficient for one axis."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from lens_steer.axes import AXIS_NAMES
from lens_steer.cli.examples import with_examples
from lens_steer.cli.loading import load_model_from_args
from lens_steer.cli.options import add_data_option, add_model_option, check_at_least, check_out_folder, progress_bar
from lens_steer.errors import LensSteerError
from lens_steer.extract.activations import AGGREGATORS
from lens_steer.extract.pairs import CORPORA
from lens_steer.files import atomic_write_text, write_json
from lens_steer.forward.questions import DEFAULT_SCORING, SCORINGS
from lens_steer.tasks.metrics import BBQ_METRIC_NAMES


def add_parser(subparsers: Any) -> None:
    """Register the `sweep` subcommand."""
    p = subparsers.add_parser(
        "sweep",
        **with_examples(
            "lens-steer sweep --axis age --layers 10-20 --coeffs -2:2:1 --limit 32 --out runs/sweep-age",
            "lens-steer sweep --axis religion --layers 6,12,18 --coeffs -4,-2,2,4 --method mean_diff --out runs/sweep",
        ),
        help="sweep steered layer x coefficient on an axis's BBQ validation split",
        description="Extract the axis's default persona-pair vector at every requested layer in one pass, then "
        "evaluate the BBQ validation split unsteered once and steered at each single layer with each coefficient. "
        "Writes DIR/sweep.csv, DIR/sweep.html (heatmap) and DIR/sweep.json (configuration).",
    )
    add_model_option(p)
    add_data_option(p)
    p.add_argument("--axis", required=True, help=f"bias axis: {', '.join(AXIS_NAMES)}")
    p.add_argument("--layers", required=True, help="layers to steer, one at a time: 'A-B' (inclusive) or '10,12,14'")
    p.add_argument(
        "--coeffs",
        required=True,
        help="coefficients: start:stop:step with stop included ('-2:2:0.5') or a list ('-1,1')",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="evaluate at most N validation items (whole variant groups; default all)",
    )
    p.add_argument(
        "--scoring", default=DEFAULT_SCORING, choices=list(SCORINGS), help=f"BBQ scoring (default: {DEFAULT_SCORING})"
    )
    p.add_argument(
        "--method",
        default="pca_diff",
        choices=list(AGGREGATORS),
        help="aggregator (default: pca_diff); every direction is scaled to the mean contrast at its layer, so "
        "coefficient 1 is the average positive-negative difference there, as in the search and the ensembles",
    )
    p.add_argument(
        "--metric", default="acc", choices=list(BBQ_METRIC_NAMES), help="metric shown in the heatmap (default: acc)"
    )
    p.add_argument(
        "--num-sents", type=int, default=50, help="contrastive prompts from the axis's default corpus (default: 50)"
    )
    p.add_argument("--corpus", default=None, choices=list(CORPORA), help="prompt corpus (default: the axis's own)")
    p.add_argument("--persona", type=int, default=0, help="persona pair index 0..11 (default: 0)")
    p.add_argument("--template", type=int, default=0, help="system template index 0..2 (default: 0)")
    p.add_argument(
        "--n-boot", type=int, default=1000, help="bootstrap resamples for intervals (default: 1000; 0 = none)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed for the bootstrap, the item limit and the split (default: 0)"
    )
    p.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass (default: 16)")
    # let "--coeffs -2:2:0.5" read as a value, not an option (argparse < 3.13 only knows plain negative numbers)
    if hasattr(p, "_negative_number_matcher"):
        p._negative_number_matcher = re.compile(r"^-\d+$|^-\d*\.\d+$|^-[\d.]+(:-?[\d.]+)+$|^-[\d.]+(,-?[\d.]+)+$")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the sweep, write the table, heatmap and configuration, print a summary."""
    from lens_steer.axes import get_axis
    from lens_steer.data.select import select
    from lens_steer.extract.activations import pair_activations
    from lens_steer.extract.pairs import axis_persona_pairs
    from lens_steer.methods.sweep import rows_to_csv, run_sweep
    from lens_steer.report.plots import sweep_heatmap, write_figure
    from lens_steer.specs import parse_coeffs, parse_layers

    if args.batch_size < 1:
        raise LensSteerError(f"--batch-size must be at least 1, got {args.batch_size}")
    check_out_folder(args.out)
    check_at_least(args.limit, 1, "--limit")
    check_at_least(args.n_boot, 0, "--n-boot")
    axis = get_axis(args.axis)
    coeffs = list(parse_coeffs(args.coeffs))
    items = select(axis.name, "validation", args.limit, seed=args.seed, split_seed=args.seed, data_root=args.data_dir)
    model = load_model_from_args(args)
    layers = list(parse_layers(args.layers, n_layers=int(model.cfg.n_layers)))
    pairs = axis_persona_pairs(
        axis.name,
        model.tokenizer,
        num_sents=args.num_sents,
        persona=args.persona,
        template=args.template,
        corpus=args.corpus,
        data_root=args.data_dir,
    )
    out = Path(args.out)
    n_evals = 1 + len(layers) * sum(1 for c in coeffs if c != 0)
    update, close = progress_bar(2 * len(pairs) + n_evals * len(items), f"sweep {axis.name}")
    done: list[dict[str, Any]] = []

    def on_row(row: dict[str, Any]) -> None:
        done.append(row)
        atomic_write_text(out / "sweep.csv", rows_to_csv(done))

    try:
        acts = pair_activations(model, pairs, layers, max_batch=args.batch_size, progress=update)
        result = run_sweep(
            model,
            acts,
            items,
            layers,
            coeffs,
            method=args.method,
            metric=args.metric,
            scoring=args.scoring,
            n_boot=args.n_boot,
            seed=args.seed,
            max_batch=args.batch_size,
            progress=update,
            on_row=on_row,
        )
    finally:
        close()
    config = {
        **result.config,
        "axis": axis.name,
        "bbq_category": axis.bbq_category,
        "split": "validation",
        "split_seed": args.seed,
        "limit": args.limit,
    }
    atomic_write_text(out / "sweep.csv", result.to_csv())
    write_json(out / "sweep.json", config)
    fig = sweep_heatmap(
        result.rows,
        result.baseline,
        title=f"{axis.name} ({config['model_name']}, {args.method}, {args.scoring}, n={len(items)})",
    )
    write_figure(fig, out / "sweep.html")
    base = result.baseline
    best = max(result.rows, key=lambda r: r["value"])
    print(f"wrote {out / 'sweep.csv'}, {out / 'sweep.html'}, {out / 'sweep.json'}")
    print(
        f"baseline {args.metric} {base['value']:.3f} [{base['ci_low']:.3f}, {base['ci_high']:.3f}] on {len(items)} "
        "validation items"
    )
    print(
        f"highest cell: layer {best['layer']} coeff {best['coeff']:g}: {best['value']:.3f} [{best['ci_low']:.3f}, "
        f"{best['ci_high']:.3f}]"
    )
    return 0
