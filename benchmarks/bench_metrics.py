"""Speed of the BBQ metrics with bootstrap intervals: 2000 predictions, 1000 resamples, for bbq_metrics and
paired_comparison (the wall-clock check that used to sit in tests/test_metrics.py; speed is measured here,
not asserted in the suite). Run: `.venv/bin/python benchmarks/bench_metrics.py [--items 2000] [--resamples 1000]`.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np

from lens_steer.tasks.metrics import BbqPrediction, bbq_metrics, paired_comparison


def predictions(n: int, seed: int = 0) -> list[BbqPrediction]:
    """`n` random predictions, half ambiguous (label = unknown, index 2)."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        probs = rng.dirichlet([1, 1, 1])
        amb = bool(i % 2)
        out.append(
            BbqPrediction(
                example_id=i,
                category="Age",
                context_condition="ambig" if amb else "disambig",
                question_polarity="neg",
                pred=int(np.argmax(probs)),
                label=2 if amb else int(rng.integers(0, 2)),
                unknown_index=2,
                biased_index=0,
                option_logprobs=tuple(math.log(p) for p in probs),
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    preds = predictions(args.items)
    start = time.perf_counter()
    bbq_metrics(preds, n_boot=args.resamples)
    mid = time.perf_counter()
    paired_comparison(preds, preds, n_boot=args.resamples)
    end = time.perf_counter()
    print(
        f"{args.items} predictions, {args.resamples} resamples: bbq_metrics {mid - start:.2f}s, paired_comparison "
        f"{end - mid:.2f}s, total {end - start:.2f}s"
    )


if __name__ == "__main__":
    main()
