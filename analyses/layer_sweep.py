"""Layer sweep: BBQ validation accuracy (and bias) of one axis, steering one layer at a time with each coefficient.

Run: python analyses/layer_sweep.py [--out out/layer_sweep] [--model smollm2-135m-instruct] [--axis age] ...
Writes sweep.csv, sweep.json, sweep.html (accuracy heatmap), sweep_stereotype_margin.html and sweep_unknown_margin.html
to the output folder.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path

from lens_steer.cli import run_reporting_errors
from lens_steer.cli.loading import load_model_from_args
from lens_steer.cli.options import analysis_parser
from lens_steer.files import atomic_write_text, write_json
from lens_steer.methods.sweep import rows_to_csv, sweep_axis
from lens_steer.report.plots import sweep_heatmap, write_figure
from lens_steer.specs import parse_coeffs, parse_layers


def main(argv: list[str] | None = None) -> int:
    p = analysis_parser(__doc__, "layer_sweep")
    p.add_argument("--axis", default="age")
    p.add_argument("--layers", default="6,12,18", help="layers, 'A-B' or a list (default: 6,12,18)")
    p.add_argument(
        "--coeffs",
        default="-8:8:4",
        help="start:stop:step or a list (default: -8:8:4; coefficient 1 is the mean contrast of the pairs at the "
        "layer, whatever the method)",
    )
    p.add_argument("--method", default="pca_diff", choices=["pca_diff", "mean_diff", "pca_center"])
    p.add_argument("--scoring", default="letter", help="BBQ scoring (default: letter, one forward pass per item)")
    p.add_argument("--limit", type=int, default=16, help="validation items (whole variant groups; default 16)")
    p.add_argument("--num-sents", type=int, default=20, help="contrastive prompts (default 20)")
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p._negative_number_matcher = re.compile(
        r"^-\d+$|^-\d*\.\d+$|^-[\d.]+([:,]-?[\d.]+)+$"
    )  # "--coeffs -2:2:0.5" is a value
    args = p.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(args.out)
    coeffs = list(parse_coeffs(args.coeffs))
    model = load_model_from_args(args)
    layers = list(parse_layers(args.layers, n_layers=int(model.cfg.n_layers)))
    t0 = time.time()
    done: list[dict] = []

    def on_row(row: dict) -> None:
        done.append(row)
        atomic_write_text(out / "sweep.csv", rows_to_csv(done))
        where = "baseline" if row["kind"] == "baseline" else f"layer {row['layer']} coeff {row['coeff']:g}"
        print(
            f"[{time.time() - t0:6.0f}s] {where}: {row['metric']} {row['value']:.3f} [{row['ci_low']:.3f}, "
            f"{row['ci_high']:.3f}]",
            file=sys.stderr,
        )

    result = sweep_axis(
        model,
        args.axis,
        layers,
        coeffs,
        method=args.method,
        scoring=args.scoring,
        limit=args.limit,
        num_sents=args.num_sents,
        data_root=args.data_dir,
        n_boot=args.n_boot,
        seed=args.seed,
        split_seed=args.seed,
        on_row=on_row,
    )
    atomic_write_text(out / "sweep.csv", result.to_csv())
    write_json(out / "sweep.json", result.config)
    label = (
        f"{result.config['axis']} ({result.config['model_name']}, {args.method}, {args.scoring}, "
        f"n={result.config['n_items']} validation items)"
    )
    write_figure(sweep_heatmap(result.rows, result.baseline, title=label), out / "sweep.html")

    def as_metric(row: dict, name: str) -> dict:
        return {**row, "metric": name, "value": row[name], "ci_low": None, "ci_high": None}

    for name, file in [
        ("stereotype_margin_ambig", "sweep_stereotype_margin.html"),
        ("unknown_margin_ambig", "sweep_unknown_margin.html"),
    ]:
        rows = [as_metric(r, name) for r in result.rows]
        write_figure(sweep_heatmap(rows, as_metric(result.baseline, name), title=label), out / file)
    print(
        f"wrote {out}/sweep.csv, sweep.json, sweep.html, sweep_stereotype_margin.html, sweep_unknown_margin.html in "
        f"{time.time() - t0:.0f}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
