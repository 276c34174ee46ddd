"""Vector geometry: the nine axis vectors at every layer — cosines between axes and between layers, norms, a 2-D PCA.

Run: python analyses/vector_geometry.py [--out out/vector_geometry] [--model smollm2-135m-instruct] [--layer 15] ...
Writes vectors/<axis>.safetensors, and CSV + HTML for each figure, to the output folder.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from lens_steer.axes import AXIS_NAMES, get_axis
from lens_steer.cli import run_reporting_errors
from lens_steer.cli.loading import load_model_from_args
from lens_steer.cli.options import analysis_parser
from lens_steer.files import atomic_write_text, write_json
from lens_steer.methods.geometry import (
    axis_cosines,
    axis_vectors,
    layer_cosines,
    matrix_rows,
    norm_rows,
    pca_2d,
    random_cosine_reference,
    random_direction_cosines,
    save_axis_vectors,
)
from lens_steer.methods.sweep import rows_to_csv
from lens_steer.report.plots import cosine_heatmap, norms_figure, pca_scatter, write_figure


def main(argv: list[str] | None = None) -> int:
    p = analysis_parser(__doc__, "vector_geometry")
    p.add_argument(
        "--layer", type=int, default=None, help="layer of the axis x axis cosines and the PCA (default: n_layers // 2)"
    )
    p.add_argument("--axis", default="age", help="axis of the layer x layer cosine matrix (default: age)")
    p.add_argument("--method", default="pca_diff", choices=["pca_diff", "mean_diff", "pca_center"])
    p.add_argument("--num-sents", type=int, default=16, help="contrastive prompts per axis (default 16)")
    p.add_argument("--persona", type=int, default=0, help="persona pair index (default 0)")
    p.add_argument("--template", type=int, default=0, help="system template index (default 0)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random reference direction")
    args = p.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(args.out)
    t0 = time.time()
    model = load_model_from_args(args)
    n_layers, d = int(model.cfg.n_layers), int(model.cfg.d_model)
    layer = n_layers // 2 if args.layer is None else args.layer
    axis = get_axis(args.axis).name
    vectors = axis_vectors(
        model,
        AXIS_NAMES,
        method=args.method,
        num_sents=args.num_sents,
        persona=args.persona,
        template=args.template,
        data_root=args.data_dir,
        progress=None,
    )
    print(f"[{time.time() - t0:.0f}s] extracted {len(vectors)} axis vectors at {n_layers} layers", file=sys.stderr)
    save_axis_vectors(vectors, out / "vectors")
    model_name = next(iter(vectors.values())).metadata.model_name
    ref = random_cosine_reference(d)
    shared = [a for a in AXIS_NAMES if get_axis(a).default_corpus == "genericqa"]
    note = (
        f"random directions in d={d}: cos sd {ref['sd']:.3f}, mean |cos| {ref['mean_abs']:.3f}. "
        f"{' and '.join(shared)} share their default pairs (genericqa), so their vectors are identical."
    )

    names, m = axis_cosines(vectors, layer)
    rnd = random_direction_cosines(vectors, layer, seed=args.seed)
    rows = matrix_rows(names, m, "axis")
    for r in rows:
        r["cos_with_random_direction"] = rnd[r["axis"]]
        r["random_cos_sd_1_over_sqrt_d"] = ref["sd"]
        r["random_mean_abs_cos"] = ref["mean_abs"]
    atomic_write_text(out / f"axis_cosines_layer{layer}.csv", rows_to_csv(rows))
    write_figure(
        cosine_heatmap(
            names,
            m,
            title=f"Cosine similarity of axis vectors at layer {layer} ({model_name}, {args.method})",
            note=note,
        ),
        out / f"axis_cosines_layer{layer}.html",
    )

    layers, lm = layer_cosines(vectors[axis])
    atomic_write_text(out / f"layer_cosines_{axis}.csv", rows_to_csv(matrix_rows(layers, lm, "layer")))
    write_figure(
        cosine_heatmap(
            layers,
            lm,
            title=f"Cosine similarity between layers of the {axis} vector ({model_name}, {args.method})",
            note=f"random directions in d={d}: cos sd {ref['sd']:.3f}",
        ),
        out / f"layer_cosines_{axis}.html",
    )

    norms = norm_rows(vectors)
    atomic_write_text(out / "norms.csv", rows_to_csv(norms))
    write_figure(
        norms_figure(norms, title=f"Steering-vector norm by layer ({model_name}, {args.method}; the mean contrast)"),
        out / "norms.html",
    )

    coords, ratio = pca_2d([vectors[n].normalized().directions[layer] for n in names])  # directions only
    pca_rows = [
        {
            "axis": n,
            "pc1": float(c[0]),
            "pc2": float(c[1]),
            "pc1_var_ratio": float(ratio[0]),
            "pc2_var_ratio": float(ratio[1]),
        }
        for n, c in zip(names, coords)
    ]
    atomic_write_text(out / f"pca_layer{layer}.csv", rows_to_csv(pca_rows))
    write_figure(
        pca_scatter(
            names,
            coords,
            ratio,
            title=f"2-D PCA of the unit axis vectors at layer {layer} ({model_name}, {args.method})",
        ),
        out / f"pca_layer{layer}.html",
    )
    write_json(
        out / "geometry.json",
        {
            "model_name": model_name,
            "layer": layer,
            "axis": axis,
            "method": args.method,
            "num_sents": args.num_sents,
            "persona": args.persona,
            "template": args.template,
            "random_reference": ref,
            "identical_default_pairs": shared,
        },
    )
    print(f"wrote {out} in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
