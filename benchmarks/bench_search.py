"""Mean ISV trial time: the cached search (activations read once per contrastive dataset and grown
on demand) against a naive trial (re-extract every trial), on the same trial parameters, same run.

    python benchmarks/bench_search.py [--model smollm2-135m-instruct] [--trials 8] [--limit 8]

The parameters come from one TPE study run with the cached objective; the naive objective is then
timed on exactly those parameters. Prints both means and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import optuna


def main() -> int:
    """Run the benchmark and print the numbers."""
    from lens_steer.axes import get_axis
    from lens_steer.models import load_model
    from lens_steer.search import ActivationCache, IsvObjective, SearchConfig, SearchSpace, open_storage, open_study, run_trials

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--axis", default="age")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--limit", type=int, default=8, help="validation items per trial")
    ap.add_argument("--scoring", default="letter")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(args.model)
    n = int(model.cfg.n_layers)
    # a space narrowed as a converging search narrows it: few datasets, many layer/coeff/method choices
    space = SearchSpace(
        corpora=("age", "genericqa"),
        num_sents=(100, 200, 50),
        personas=(0, 3),
        templates=(0,),
        coeff=(-2.0, 2.0, 0.2),
        layers=tuple((i,) for i in range(n // 3, n - 3, 3)) + (tuple(range(n // 2, n // 2 + 4)),),
        methods=("pca_diff", "mean_diff"),
    )
    cfg = SearchConfig(space=space, n_trials=args.trials, limit=args.limit, chunk_size=args.limit, scoring=args.scoring, tpe_startup_trials=4)
    axis = get_axis(args.axis)
    space = space.resolve(n)
    cached = IsvObjective(model, axis, cfg, cache=ActivationCache(model, space.all_layers))
    naive = IsvObjective(model, axis, cfg, items=cached.items, cache=None)

    study, _ = open_study(open_storage(None), "bench", config=cfg)
    times_cached: list[float] = []

    def timed(params: dict, trial: optuna.Trial) -> float:
        t = time.perf_counter()
        v = cached(params)
        times_cached.append(time.perf_counter() - t)
        print(f"cached trial {len(times_cached)}: {times_cached[-1]:.1f}s {params}", file=sys.stderr, flush=True)
        return v

    run_trials(study, timed, space, args.trials, seed=0)
    params = [t.params for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    times_naive = []
    for p in params:
        t = time.perf_counter()
        naive(p)
        times_naive.append(time.perf_counter() - t)
        print(f"naive trial {len(times_naive)}: {times_naive[-1]:.1f}s", file=sys.stderr, flush=True)
    eval_t = time.perf_counter()
    cached.predictions(cached.items, cached.vector(params[0]), 1.0)
    eval_only = time.perf_counter() - eval_t
    mc, mn = statistics.mean(times_cached), statistics.mean(times_naive)
    c = cached.cache
    assert c is not None
    print(f"model {args.model}, axis {args.axis}, {len(params)} trials, {len(cached.items)} validation items ({args.scoring}), layers {list(space.all_layers)}")
    print(f"cache: {c.misses} misses, {c.hits} hits, {c.pairs_read} pairs read (naive read {sum(int(p['num_sents']) for p in params)})")
    print(f"mean trial time: cached {mc:.2f}s, naive {mn:.2f}s, ratio {mn / mc:.2f}x (evaluation alone {eval_only:.2f}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
