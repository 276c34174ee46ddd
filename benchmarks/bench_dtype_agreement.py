"""Does bfloat16 scoring pick the same BBQ answers as float32? Unsteered and steered, on one model.

    .venv/bin/python benchmarks/bench_dtype_agreement.py [--model smollm2-135m-instruct] [--items 200]

Items: `--items` BBQ test-split items drawn across all categories (seeded, as `lens-steer eval --limit`).
Vector: the age axis's default persona pairs (50), mean difference at the middle layer, scaled to the mean
contrast (the search's unit), applied at coefficient `--coeff`; it is extracted once in float32 and
applied to both models (vectors are stored in float32 and cast to the model's dtype when added).
Prints agreement of the chosen answers (bf16 vs fp32), the largest and mean gap in normalised option
log-probabilities, accuracy under each dtype, and seconds per pass; writes the JSON to `--out` if given.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--coeff", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    from lens_steer.data.bbq import load_bbq
    from lens_steer.data.select import limit_bbq
    from lens_steer.data.splits import select_split
    from lens_steer.extract.activations import extract_vector
    from lens_steer.extract.pairs import axis_persona_pairs
    from lens_steer.files import write_json
    from lens_steer.model.load import load_model
    from lens_steer.tasks.bbq import bbq_predictions

    items = limit_bbq(select_split(load_bbq(), "test", seed=0), args.items, seed=args.seed)
    models = {dtype: load_model(args.model, dtype=dtype) for dtype in ("float32", "bfloat16")}
    ref = models["float32"]
    layer = int(ref.cfg.n_layers) // 2
    vec = extract_vector(
        ref, axis_persona_pairs("age", ref.tokenizer, num_sents=50), [layer], method="mean_diff", scale="contrast"
    )
    runs: dict[str, dict[str, object]] = {}
    for label, vector, coeff in (("unsteered", None, 0.0), ("steered", vec, args.coeff)):
        out: dict[str, object] = {}
        for dtype, model in models.items():
            t = time.perf_counter()
            scores, preds = bbq_predictions(model, items, vector=vector, coeff=coeff)
            out[dtype] = {"seconds": round(time.perf_counter() - t, 1), "scores": scores, "preds": preds}
        a, b = out["float32"], out["bfloat16"]
        picks = [(x.pred, y.pred) for x, y in zip(a["scores"], b["scores"])]  # type: ignore[index]
        gaps = np.array(
            [abs(p - q) for x, y in zip(a["scores"], b["scores"]) for p, q in zip(x.option_scores, y.option_scores)]
        )  # type: ignore[index]
        acc = {d: float(np.mean([p.pred == p.label for p in out[d]["preds"]])) for d in models}  # type: ignore[index]
        runs[label] = {
            "n": len(items),
            "agree": sum(p == q for p, q in picks),
            "agreement": round(sum(p == q for p, q in picks) / len(picks), 4),
            "max_logprob_gap": round(float(gaps.max()), 4),
            "mean_logprob_gap": round(float(gaps.mean()), 4),
            "accuracy": acc,
            "seconds": {d: out[d]["seconds"] for d in models},  # type: ignore[index]
        }
        print(label, json.dumps(runs[label]))
    result = {
        "model": args.model,
        "items": len(items),
        "layer": layer,
        "coeff": args.coeff,
        "vector": "age persona pairs (50), mean_diff, mean-contrast scale",
        "runs": runs,
    }
    if args.out:
        write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
