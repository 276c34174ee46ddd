"""Organism training time: the default recipe's training path against the earlier ones, same run, same items.

    python benchmarks/bench_organism.py [--steps 24] [--json out.json]

Each configuration trains the default recipe's top blocks for `--steps` optimiser steps on the first batches of
epoch 0 (its own batching of the same 3,424 train items, residuals of the frozen blocks computed once, as a build
does) and reports seconds per step, items and tokens per batch (padding included) and the epoch time it implies
(seconds per step x steps per epoch). Configurations: the earlier path (uniformly shuffled batches, SDPA
attention, unfused AdamW), each change alone, the length-grouped path with all three (recipe 5), that path with
the system turn every sequence starts with run once per batch, and the default: the items of a template fill
packed into one sequence sharing their context (`context-grouped`), with the rest. Weights are restored between
configurations, so each starts from the base model.
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

    from lens_steer.methods.organism.train import (
        OrganismRecipe,
        TokenizerView,
        epoch_batches,
        load_base_hf,
        pack_group,
        trainable_parameters,
        training_items,
        training_units,
    )
    from lens_steer.forward.packed_cloze import (
        batch_targets,
        collate,
        lower_residual,
        shared_prefix_length,
        upper_logliks,
    )

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--steps", type=int, default=24, help="optimiser steps timed per configuration (after one warm-up step)"
    )
    ap.add_argument("--json", default=None, help="write every timing and ratio to this file")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    recipe = OrganismRecipe()
    hf, tok = load_base_hf(recipe)
    hf.eval()
    items = training_items(recipe)
    packings = {}
    for grouping in ("shuffled", "context-grouped"):  # items alone, or a template fill per sequence
        units = training_units(items, grouping)
        packed = [pack_group(TokenizerView(tok), [(t.item, t.target) for t in u]) for u in units]
        packings[grouping] = (packed, [len(u) for u in units], shared_prefix_length(packed))
    start = int(hf.config.num_hidden_layers) - recipe.trainable_blocks
    pad = int(tok.pad_token_id or 0)
    params = trainable_parameters(hf, start)
    base = [p.detach().clone() for p in params]
    configs = {  # batching, attention, fused AdamW, system turn once per batch
        "earlier (shuffled, sdpa, unfused)": ("shuffled", "sdpa", False, False),
        "length-grouped only": ("length-grouped", "sdpa", False, False),
        "eager attention only": ("shuffled", "eager", False, False),
        "fused AdamW only": ("shuffled", "sdpa", True, False),
        "system turn once only": ("shuffled", "sdpa", False, True),
        "length-grouped, eager, fused (recipe 5)": ("length-grouped", "eager", True, False),
        "recipe 5 + system turn once": ("length-grouped", "eager", True, True),
        "default (context-grouped, all of the above)": ("context-grouped", "eager", True, True),
    }
    results: dict[str, dict[str, float]] = {}
    for label, (batching, attention, fused, share) in configs.items():
        packed, sizes, shared = packings["context-grouped" if batching == "context-grouped" else "shuffled"]
        batches = epoch_batches([len(p.ids) for p in packed], recipe.batch_size, recipe.seed, 0, batching, sizes)
        timed = batches[: args.steps + 1]
        with torch.no_grad():
            for p, b in zip(params, base):
                p.copy_(b)
        optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0, fused=fused)
        seconds: list[float] = []
        tokens: list[int] = []
        n_items: list[int] = []
        for k, idx in enumerate(timed):
            batch = [packed[i] for i in idx]
            ids, pos, mask = collate(batch, pad)
            resid = lower_residual(hf, ids, pos, mask, start, recipe.precision)
            t = time.perf_counter()
            lls = upper_logliks(
                hf, resid, pos, mask, batch, start, recipe.precision, attention=attention, shared=shared if share else 0
            )
            loss = torch.nn.functional.cross_entropy(lls.float(), batch_targets(batch))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if k:  # the first step warms the kernels up
                seconds.append(time.perf_counter() - t)
                tokens.append(int(ids.numel()))
                n_items.append(len(lls))
        per_item = sum(seconds) / sum(n_items)
        results[label] = {
            "seconds_per_step": statistics.mean(seconds),
            "items_per_batch": statistics.mean(n_items),
            "tokens_per_batch": statistics.mean(tokens),
            "seconds_per_item": per_item,
            "epoch_seconds": per_item * len(items),
            "steps_per_epoch": len(batches),
        }
        r = results[label]
        print(
            f"{label:45s} {r['seconds_per_step']:6.3f} s/step  {r['items_per_batch']:4.1f} items, {r['tokens_per_batch']:5.0f} tokens/batch  epoch ~{r['epoch_seconds'] / 60:5.1f} min",
            flush=True,
        )
    earlier = results["earlier (shuffled, sdpa, unfused)"]["epoch_seconds"]
    ratios = {label: earlier / r["epoch_seconds"] for label, r in results.items()}
    for label, ratio in ratios.items():
        print(f"  {label}: {ratio:.2f}x the earlier path's epoch")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "steps": args.steps,
                    "torch_threads": torch.get_num_threads(),
                    "configs": results,
                    "speedup_vs_earlier": ratios,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
