"""Search stability: does the staged search make the same choice under two sampler seeds?

Run: python analyses/search_stability.py [--model smollm2-organism] [--axes age,religion] [--trials 16] ...
For each axis it runs the intervention search twice on the same validation items (the data seed fixed), once per
sampler seed, and writes `stability.json`: per axis each run's chosen kind, layers and validation value, whether the
kind and the (kind, layers) pair agree, and the share of axes where they do. A search whose choices are random at
its budget agrees about as often as drawing a kind at random would (1 / number of kinds).
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

from lens_steer.axes import AXIS_NAMES, get_axis
from lens_steer.cli import run_reporting_errors
from lens_steer.cli.loading import load_model_from_args
from lens_steer.cli.options import analysis_parser
from lens_steer.files import write_json
from lens_steer.methods.search.run import run_isv_search
from lens_steer.methods.search.space import SearchConfig, SearchSpace


def main(argv: list[str] | None = None) -> int:
    p = analysis_parser(__doc__, "search_stability")
    p.add_argument("--axes", default="age,gender_identity,nationality,religion")
    p.add_argument("--trials", type=int, default=16, help="trials per search (default 16: the small budget's)")
    p.add_argument("--limit", type=int, default=32, help="validation items per trial (default 32)")
    p.add_argument("--num-sents", default="32,96,32", help="pair / train item counts low,high,step (default 32,96,32)")
    p.add_argument("--seeds", default="0,1", help="the two sampler seeds (default 0,1)")
    p.add_argument("--data-seed", type=int, default=0)
    args = p.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(args.out)
    model = load_model_from_args(args)
    axes = [get_axis(a).name for a in args.axes.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    lo, hi, st = (int(x) for x in args.num_sents.split(","))
    kinds = SearchSpace().kinds
    rows = {}
    t0 = time.time()
    for axis in axes:
        runs = []
        for seed in seeds:
            cfg = SearchConfig(
                space=SearchSpace(num_sents=(lo, hi, st)),
                objective="ambig_guarded",
                n_trials=args.trials,
                limit=args.limit,
                seed=seed,
                data_seed=args.data_seed * 1000 + AXIS_NAMES.index(axis),
                chunk_size=max(4, args.limit // 2),
                tpe_startup_trials=len(kinds),
            )
            res = run_isv_search(
                model, axis, dataclasses.replace(cfg), out / axis / f"seed{seed}", cache_dir=out / "activations"
            )
            chosen = (res.summary or {}).get("chosen") or {}
            params = chosen.get("params") or {}
            runs.append(
                {
                    "seed": seed,
                    "kind": params.get("kind") if chosen.get("beats_baseline") else "none",
                    "layers": params.get("layers"),
                    "value": chosen.get("value"),
                    "baseline": (res.baseline or {}).get("objective"),
                }
            )
            print(f"[{time.time() - t0:6.0f}s] {axis} seed {seed}: {runs[-1]}", file=sys.stderr)
        rows[axis] = {
            "runs": runs,
            "same_kind": len({r["kind"] for r in runs}) == 1,
            "same_kind_and_layers": len({(r["kind"], r["layers"]) for r in runs}) == 1,
        }
    summary = {
        "axes": rows,
        "kind_agreement": sum(r["same_kind"] for r in rows.values()) / len(rows),
        "kind_and_layers_agreement": sum(r["same_kind_and_layers"] for r in rows.values()) / len(rows),
        "chance_kind_agreement": 1 / (len(kinds) + 1),  # a kind or nothing, drawn at random twice
        "config": {
            "trials": args.trials,
            "limit": args.limit,
            "num_sents": [lo, hi, st],
            "seeds": seeds,
            "model": args.model,
        },
    }
    write_json(out / "stability.json", summary)
    print(
        f"kind agreement {summary['kind_agreement']:.2f}, kind and layers {summary['kind_and_layers_agreement']:.2f}"
        f" (chance {summary['chance_kind_agreement']:.2f}); {out / 'stability.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors(lambda: main()))
