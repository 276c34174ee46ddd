"""Organism training step time: the default recipe's training path against the earlier one, same run, same items.

    python benchmarks/bench_organism.py [--steps 24] [--json out.json]

Each configuration trains the default recipe's top blocks for `--steps` optimiser steps on the first batches of
epoch 0 (its own batching of the same 3,424 train items, residuals of the frozen blocks computed once, as a build
does) and reports seconds per step, tokens per batch (padding included) and the epoch time it implies
(seconds per step x steps per epoch). Configurations: the earlier path (uniformly shuffled batches, SDPA
attention, unfused AdamW), each change alone, and the default (length-grouped batches, eager attention, fused
AdamW). Weights are restored between configurations, so each starts from the base model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path


def main() -> int:
    """Run the benchmark and print the numbers."""
    import torch

    from lens_steer.organism import (
        OrganismRecipe,
        TokenizerView,
        collate,
        epoch_batches,
        load_base_hf,
        lower_residual,
        pack_item,
        trainable_parameters,
        training_items,
        upper_logliks,
    )

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=24, help="optimiser steps timed per configuration (after one warm-up step)")
    ap.add_argument("--json", default=None, help="write every timing and ratio to this file")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    recipe = OrganismRecipe()
    hf, tok = load_base_hf(recipe)
    hf.eval()
    packed = [pack_item(TokenizerView(tok), t.item, t.target) for t in training_items(recipe)]
    lengths = [len(p.ids) for p in packed]
    start = int(hf.config.num_hidden_layers) - recipe.trainable_blocks
    pad = int(tok.pad_token_id or 0)
    params = trainable_parameters(hf, start)
    base = [p.detach().clone() for p in params]
    configs = {
        "earlier (shuffled, sdpa, unfused)": ("shuffled", "sdpa", False),
        "length-grouped only": ("length-grouped", "sdpa", False),
        "eager attention only": ("shuffled", "eager", False),
        "fused AdamW only": ("shuffled", "sdpa", True),
        "default (length-grouped, eager, fused)": ("length-grouped", "eager", True),
    }
    results: dict[str, dict[str, float]] = {}
    for label, (batching, attention, fused) in configs.items():
        batches = epoch_batches(lengths, recipe.batch_size, recipe.seed, 0, batching)
        timed = batches[: args.steps + 1]
        with torch.no_grad():
            for p, b in zip(params, base):
                p.copy_(b)
        optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0, fused=fused)
        seconds: list[float] = []
        tokens: list[int] = []
        for k, idx in enumerate(timed):
            batch = [packed[i] for i in idx]
            ids, pos, mask = collate(batch, pad)
            resid = lower_residual(hf, ids, pos, mask, start, recipe.precision)
            t = time.perf_counter()
            lls = upper_logliks(hf, resid, pos, mask, batch, start, recipe.precision, attention=attention)
            loss = torch.nn.functional.cross_entropy(lls.float(), torch.tensor([p.target for p in batch]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if k:  # the first step warms the kernels up
                seconds.append(time.perf_counter() - t)
                tokens.append(int(ids.numel()))
        per_step = statistics.mean(seconds)
        results[label] = {"seconds_per_step": per_step, "tokens_per_batch": statistics.mean(tokens), "epoch_seconds": per_step * len(batches), "steps_per_epoch": len(batches)}
        print(f"{label:40s} {per_step:6.3f} s/step  {results[label]['tokens_per_batch']:6.0f} tokens/batch  epoch ~{results[label]['epoch_seconds'] / 60:5.1f} min", flush=True)
    earlier = results["earlier (shuffled, sdpa, unfused)"]["epoch_seconds"]
    ratios = {label: earlier / r["epoch_seconds"] for label, r in results.items()}
    for label, ratio in ratios.items():
        print(f"  {label}: {ratio:.2f}x the earlier path's epoch")
    if args.json:
        Path(args.json).write_text(json.dumps({"steps": args.steps, "torch_threads": torch.get_num_threads(), "configs": results, "speedup_vs_earlier": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
