"""Organism training time: the default recipe's training path against the earlier ones, same run, same items.

    python benchmarks/bench_organism.py [--steps 24] [--json out.json] [--levers-only] [--base tiny-llama]

Each configuration trains the default recipe's top blocks for `--steps` optimiser steps on the first batches of
epoch 0 (its own batching of the same 3,424 train items, residuals of the frozen blocks computed once, as a build
does) and reports seconds per step, items and tokens per batch (padding included) and the epoch time it implies
(seconds per step x steps per epoch). Configurations: the earlier path (uniformly shuffled batches, SDPA
attention, unfused AdamW), each change alone, the length-grouped path with all three (recipe 5), that path with
the system turn every sequence starts with run once per batch, and the default: the items of a template fill
packed into one sequence sharing their context (`context-grouped`), with the rest. Then the recipe's levers, each
against the default in the hardware's precision (`auto`): fp32 and bf16-mixed explicitly, whole variant groups
selected (`--selection groups`: same item count, more items per sequence) and LoRA adapters instead of full
weights (`--lora-rank`). Weights are restored between configurations, so each starts from the base model.
`--levers-only` times just the default and the levers; `--base tiny-llama` checks the script in seconds.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Any


def main() -> int:
    """Run the benchmark and print the numbers."""
    import torch

    from lens_steer.forward.packed_cloze import (
        batch_targets,
        collate,
        lower_residual,
        shared_prefix_length,
        upper_logliks,
    )
    from lens_steer.methods.organism.adapters import add_adapters
    from lens_steer.methods.organism.train import (
        SELECTIONS,
        OrganismRecipe,
        TokenizerView,
        epoch_batches,
        load_base_hf,
        pack_group,
        resolve_precision,
        trainable_parameters,
        training_items,
        training_units,
    )

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--steps", type=int, default=24, help="optimiser steps timed per configuration (after one warm-up step)"
    )
    ap.add_argument("--json", default=None, help="write every timing and ratio to this file")
    ap.add_argument("--lora-rank", type=int, default=8, help="the LoRA lever's rank (default 8)")
    ap.add_argument("--levers-only", action="store_true", help="time only the default and the recipe's levers")
    ap.add_argument(
        "--base", default=None, help="base model (default: the default recipe's; tiny-llama to check the script)"
    )
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    recipe, why = resolve_precision(OrganismRecipe(**({"base": args.base} if args.base else {})))
    print(f"precision of the default: {recipe.precision} ({why}); torch threads {torch.get_num_threads()}")
    hf, tok = load_base_hf(recipe)
    hf.eval()
    selected = {s: training_items(dataclasses.replace(recipe, selection=s)) for s in SELECTIONS}
    packings = {}
    for selection, items in selected.items():
        for grouping in ("shuffled", "context-grouped"):  # items alone, or a template fill per sequence
            units = training_units(items, grouping)
            packed = [pack_group(TokenizerView(tok), [(t.item, t.target) for t in u]) for u in units]
            packings[selection, grouping] = (packed, [len(u) for u in units], shared_prefix_length(packed))
    start = max(0, int(hf.config.num_hidden_layers) - recipe.trainable_blocks)  # as `train` has it
    pad = int(tok.pad_token_id or 0)
    params = trainable_parameters(hf, start)
    base = [p.detach().clone() for p in params]
    default = {"precision": recipe.precision, "selection": "items", "lora": 0}
    history = {  # batching, attention, fused AdamW, system turn once per batch
        "earlier (shuffled, sdpa, unfused)": ("shuffled", "sdpa", False, False),
        "length-grouped only": ("length-grouped", "sdpa", False, False),
        "eager attention only": ("shuffled", "eager", False, False),
        "fused AdamW only": ("shuffled", "sdpa", True, False),
        "system turn once only": ("shuffled", "sdpa", False, True),
        "length-grouped, eager, fused (recipe 5)": ("length-grouped", "eager", True, False),
        "recipe 5 + system turn once": ("length-grouped", "eager", True, True),
    }
    path = ("context-grouped", "eager", True, True)
    configs: dict[str, tuple[tuple[str, str, bool, bool], dict[str, Any]]] = {
        **({} if args.levers_only else {label: (c, default) for label, c in history.items()}),
        "default (context-grouped, all of the above)": (path, default),
        "lever: fp32": (path, {**default, "precision": "fp32"}),
        "lever: bf16-mixed": (path, {**default, "precision": "bf16-mixed"}),
        "lever: groups selection": (path, {**default, "selection": "groups"}),
        f"lever: LoRA rank {args.lora_rank}": (path, {**default, "lora": args.lora_rank}),
    }
    results: dict[str, dict[str, float]] = {}
    for label, ((batching, attention, fused, share), lever) in configs.items():
        packed, sizes, shared = packings[
            lever["selection"], "context-grouped" if batching == "context-grouped" else "shuffled"
        ]
        batches = epoch_batches([len(p.ids) for p in packed], recipe.batch_size, recipe.seed, 0, batching, sizes)
        timed = batches[: args.steps + 1]
        with torch.no_grad():
            for p, b in zip(params, base):
                p.copy_(b)
        model = hf
        trained = params
        if lever["lora"]:  # adapters on a copy: the base model stays as it is for the others
            model = copy.deepcopy(hf)
            trained = add_adapters(model, start, lever["lora"])
        optimizer = torch.optim.AdamW(trained, lr=recipe.lr, weight_decay=0.0, fused=fused)
        precision = lever["precision"]
        seconds: list[float] = []
        tokens: list[int] = []
        n_items: list[int] = []
        for k, idx in enumerate(timed):
            batch = [packed[i] for i in idx]
            ids, pos, mask = collate(batch, pad)
            resid = lower_residual(model, ids, pos, mask, start, precision)
            t = time.perf_counter()
            lls = upper_logliks(
                model, resid, pos, mask, batch, start, precision, attention=attention, shared=shared if share else 0
            )
            loss = torch.nn.functional.cross_entropy(lls.float(), batch_targets(batch))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if k or len(timed) == 1:  # the first step warms the kernels up
                seconds.append(time.perf_counter() - t)
                tokens.append(int(ids.numel()))
                n_items.append(len(lls))
        per_item = sum(seconds) / sum(n_items)
        n_epoch = len(selected[lever["selection"]])
        results[label] = {
            "seconds_per_step": statistics.mean(seconds),
            "items_per_batch": statistics.mean(n_items),
            "tokens_per_batch": statistics.mean(tokens),
            "tokens_per_item": sum(tokens) / sum(n_items),
            "seconds_per_item": per_item,
            "epoch_seconds": per_item * n_epoch,
            "steps_per_epoch": len(batches),
        }
        r = results[label]
        print(
            f"{label:45s} {r['seconds_per_step']:6.3f} s/step  {r['items_per_batch']:4.1f} items,"
            f" {r['tokens_per_batch']:5.0f} tokens/batch"
            f" ({r['tokens_per_item']:4.0f}/item)  epoch ~{r['epoch_seconds'] / 60:5.1f} min",
            flush=True,
        )
    ratios: dict[str, float] = {}
    if not args.levers_only:
        earlier = results["earlier (shuffled, sdpa, unfused)"]["epoch_seconds"]
        ratios = {label: earlier / r["epoch_seconds"] for label, r in results.items() if label in history}
        for label, ratio in ratios.items():
            print(f"  {label}: {ratio:.2f}x the earlier path's epoch")
    the_default = results["default (context-grouped, all of the above)"]["epoch_seconds"]
    levers = {label: the_default / r["epoch_seconds"] for label, r in results.items() if label.startswith("lever:")}
    for label, ratio in levers.items():
        print(f"  {label}: {ratio:.2f}x the default's epoch ({recipe.precision})")
    fp32, mixed = results["lever: fp32"]["epoch_seconds"], results["lever: bf16-mixed"]["epoch_seconds"]
    print(f"  bf16-mixed / fp32 epoch time: {mixed / fp32:.2f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "steps": args.steps,
                    "torch_threads": torch.get_num_threads(),
                    "default_precision": recipe.precision,
                    "precision_reason": why,
                    "configs": results,
                    "speedup_vs_earlier": ratios,
                    "levers_speedup_vs_default": levers,
                    "bf16_mixed_over_fp32": mixed / fp32,
                },
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
