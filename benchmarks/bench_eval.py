"""BBQ scoring speed on the embedded model: the reference protocol, a plain TransformerLens forward, lens_steer's
length-bucketed path and its prefix-tree path, against the naive and the unique-token FLOP-bound ideals.

(a) reference: Hugging Face `generate`, 20 new greedy tokens, batch 8, parse the letter (the SVE paper's code);
(b) TransformerLens forward with full-sequence logits, batch 8 in file order (cloze: one sequence per option);
(c) lens_steer `score_questions(plan=RunPlan(prefix_tree=False))`: length buckets, one full sequence per option
    (the engine's path for models without a KV cache);
(c') the prefix tree with one segment per row (`RunPlan(row_tokens=0)`, the layout before packing: level by level,
    each segment reading its path's keys/values);
(d) lens_steer `score_questions` (the prefix tree: each distinct token prefix of the items' sequences once, whole
    subtrees packed into rows under a tree attention mask);
(e) lm-evaluation-harness's own BBQ task (`hf` model, its 12 choices, lm-eval prompt) on the first `--lm-eval-items`
    items, beside (d) on the same items, format and choice set; skipped, with the reason, where lm-eval is absent.
All on the same items (`limit_bbq`: whole template fills, so an item's variants are scored together, as an
evaluation of a category does) in the same run. The naive ideal counts every token of every item once (cloze: the
prompt and each option) at this machine's fp32 matmul rate, measured between the methods; the unique-token ideal
counts each distinct prefix's tokens once.

    .venv/bin/python benchmarks/bench_eval.py [--items 256] [--scoring cloze] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import resource
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

warnings.simplefilter("ignore")


def matmul_gflops(seconds: float = 2.0) -> float:
    """Sustained fp32 matmul rate (GFLOP/s) on model-like shapes."""
    a, b = torch.randn(1024, 576), torch.randn(576, 1536)
    for _ in range(5):
        a @ b
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        n += 1
    return 2 * 1024 * 576 * 1536 * n / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    parser.add_argument("--items", type=int, default=256)
    parser.add_argument("--category", default="Age")
    parser.add_argument("--scoring", default="cloze", choices=["cloze", "letter"])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--skip", default="", help="comma-separated methods to skip: reference,tl,previous,levels,lm_eval"
    )
    parser.add_argument(
        "--lm-eval-items", type=int, default=16, help="items lm-eval scores (12 choices each; it is slow)"
    )
    parser.add_argument("--json", default=None, help="write every timing, ratio and ideal to this file")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))

    from transformers import AutoModelForCausalLM

    from lens_steer.data.bbq import load_bbq
    from lens_steer.data.root import resolve_data_root
    from lens_steer.data.select import limit_bbq
    from lens_steer.forward.engine import RunPlan, plan_tree, tree_row_tokens
    from lens_steer.forward.prefix_tree import DEFAULT_CACHE_BYTES, measure_tree_memory, unique_prefix_tokens
    from lens_steer.forward.questions import cloze_prompt, encode_pair, letter_prompt
    from lens_steer.forward.scoring import score_questions
    from lens_steer.model.load import embedded_smollm2_folder, load_model
    from lens_steer.model.tokens import encode_texts, pad_batch, pad_id
    from lens_steer.tasks.bbq import bbq_question
    from lens_steer.tasks.lm_eval_bbq import write_task

    model = load_model()
    tok = model.tokenizer
    hf = AutoModelForCausalLM.from_pretrained(embedded_smollm2_folder(), dtype=torch.float32).eval()
    items = limit_bbq(load_bbq([args.category], data_root=args.data_dir), args.items, seed=0)
    questions = [bbq_question(i) for i in items]
    letter_prompts = [letter_prompt(q, range(3), "reference", tok)[0] for q in questions]
    letter_ids = encode_texts(model, letter_prompts)
    letters = [tok("abc"[k], add_special_tokens=False)["input_ids"][0] for k in range(3)]
    # the sequences each protocol scores, tokenised as score_questions does
    if args.scoring == "cloze":
        prompts, options = [], []
        for q in questions:
            text, conts = cloze_prompt(q, "reference", tok)
            pairs = [encode_pair(model, text, c, move_trailing_whitespace=False) for c in conts]
            prompts.append(pairs[0][0])
            options.append([o for _, o in pairs])
        seqs = [p + o for p, opts in zip(prompts, options) for o in opts]
        naive_tokens = sum(len(p) + sum(len(o) for o in opts) for p, opts in zip(prompts, options))
        scored = sum(len(o) for opts in options for o in opts)
        unique_scored = len(
            {tuple(p + o[:i]) for p, opts in zip(prompts, options) for o in opts for i in range(len(o))}
        )
    else:
        seqs = letter_ids
        naive_tokens, scored, unique_scored = sum(map(len, seqs)), len(seqs), len(seqs)
    unique_tokens = unique_prefix_tokens(seqs)
    # the tree score_questions runs these sequences in (its default plan): rows, and positions run with padding
    plan = plan_tree(model, seqs, RunPlan())
    rows = [r for chunk in plan.rows for r in chunk]
    plan_figures = {
        "max_row": tree_row_tokens(model, seqs, RunPlan().row_tokens),
        "rows": len(rows),
        "packed_rows": sum(len(r.segments) > 1 for r in rows),
        "trunk_rows": sum(r.stored for r in rows),
        "batches": len(plan.batches),
        "padded_positions": plan.padded_tokens,
        "unique_tokens": plan.unique_tokens,
    }

    def reference() -> list[int]:
        preds = []
        for s in range(0, len(letter_ids), 8):
            batch = pad_batch(letter_ids[s : s + 8], pad_id=pad_id(model), padding_side="left")
            with torch.inference_mode():
                out = hf.generate(
                    batch.tokens,
                    attention_mask=batch.attention_mask,
                    max_new_tokens=20,
                    min_new_tokens=20,
                    do_sample=False,
                    pad_token_id=pad_id(model),
                )
            for row in out[:, batch.tokens.shape[1] :]:
                m = re.search(r"\(?([abc])\)?", tok.decode(row, skip_special_tokens=True).lower())
                preds.append("abc".index(m.group(1)) if m else -1)
        return preds

    def tl_full_logits() -> list[int]:
        preds: list[int] = []
        if args.scoring == "letter":
            for s in range(0, len(seqs), 8):
                batch = pad_batch(seqs[s : s + 8], pad_id=pad_id(model), padding_side="right")
                with torch.inference_mode():
                    logits = model(batch.tokens)
                preds += logits[torch.arange(len(batch.lengths)), batch.last_index][:, letters].argmax(-1).tolist()
            return preds
        sums: list[float] = []
        spans = [(len(p), o) for p, opts in zip(prompts, options) for o in opts]
        for s in range(0, len(seqs), 8):
            batch = pad_batch(seqs[s : s + 8], pad_id=pad_id(model), padding_side="right")
            with torch.inference_mode():
                logp = torch.log_softmax(model(batch.tokens).float(), -1)
            for row, (n, o) in enumerate(spans[s : s + 8]):
                sums.append(sum(float(logp[row, n - 1 + i, t]) for i, t in enumerate(o)))
        return [max(range(3), key=lambda k: sums[3 * j + k]) for j in range(len(questions))]

    tree_memory: dict[str, int] = {}

    def lens_steer(tree: bool, packed: bool = True) -> Any:
        run_plan = RunPlan(prefix_tree=tree) if packed else RunPlan(prefix_tree=tree, row_tokens=0)  # a segment per row

        def run() -> list[int]:
            with measure_tree_memory() as memory:
                preds = [s.pred for s in score_questions(model, questions, scoring=args.scoring, plan=run_plan)]
            if tree and packed:
                tree_memory.update(dataclasses.asdict(memory))
            return preds

        return run

    score_questions(model, questions[:4], scoring=args.scoring)  # warm-up
    rates: list[float] = []
    methods = [
        ("reference", "(a) reference: HF generate 20 tokens", reference),
        ("tl", "(b) TL forward, full logits", tl_full_logits),
        ("previous", f"(c) lens_steer {args.scoring}, length buckets", lens_steer(False)),
        ("levels", "(c') tree, a segment per row", lens_steer(True, packed=False)),
        ("tree", f"(d) lens_steer {args.scoring}, prefix tree", lens_steer(True)),
    ]
    results: dict[str, dict[str, Any]] = {}
    load = [os.getloadavg()[0]]
    for key, label, fn in methods:
        if key in skip:
            continue
        rates.append(matmul_gflops())
        start = time.perf_counter()
        preds = fn()
        seconds = time.perf_counter() - start
        results[key] = {"label": label, "seconds": seconds, "items_per_s": len(questions) / seconds, "preds": preds}
        load.append(os.getloadavg()[0])
    rates.append(matmul_gflops())
    rate = statistics.mean(rates)
    n_nonembed = sum(p.numel() for n, p in hf.named_parameters() if "embed" not in n and "lm_head" not in n)
    flops_token = 2 * n_nonembed
    flops_logits = 2 * int(model.cfg.d_model) * int(model.cfg.d_vocab)
    naive_ideal = len(questions) / ((naive_tokens * flops_token + scored * flops_logits) / (rate * 1e9))
    unique_ideal = len(questions) / ((unique_tokens * flops_token + unique_scored * flops_logits) / (rate * 1e9))

    lm_eval_out: dict[str, Any] = {"skipped": None}
    if "lm_eval" in skip:
        lm_eval_out["skipped"] = "--skip lm_eval"
    else:
        try:
            import lm_eval
            from lm_eval.models.huggingface import HFLM
        except ImportError as e:
            lm_eval_out["skipped"] = (
                f"lm-evaluation-harness is not installed ({e}); pip install '.[parity]' (scripts/setup.sh does)"
            )
        else:
            sub = items[: args.lm_eval_items]
            root = resolve_data_root(args.data_dir)
            wanted = {it.example_id for it in sub}
            raw = [
                json.loads(x)
                for x in (root / "bbq" / "data" / f"{args.category}.jsonl").read_text().splitlines()
                if x.strip()
            ]
            by_id = {r["example_id"]: r for r in raw if r["example_id"] in wanted}
            rows = [by_id[it.example_id] for it in sub]
            with tempfile.TemporaryDirectory() as tmp:
                name = "bbq_lens_steer_bench"
                manager = write_task(rows, Path(tmp), name)
                lm = HFLM(pretrained=str(embedded_smollm2_folder()), device="cpu", batch_size=8, dtype="float32")
                start = time.perf_counter()
                lm_eval.simple_evaluate(model=lm, tasks=[name], task_manager=manager, bootstrap_iters=0)
                lm_seconds = time.perf_counter() - start
            lm_qs = [bbq_question(it, "lm_eval") for it in sub]
            start = time.perf_counter()
            score_questions(model, lm_qs, scoring="cloze", prompt_format="lm_eval")
            ours = time.perf_counter() - start
            lm_eval_out = {
                "skipped": None,
                "items": len(sub),
                "choices": len(lm_qs[0].options),
                "lm_eval_seconds": lm_seconds,
                "lm_eval_items_per_s": len(sub) / lm_seconds,
                "tree_seconds": ours,
                "tree_items_per_s": len(sub) / ours,
                "ratio": lm_seconds / ours,
            }

    base = results.get("reference", {}).get("items_per_s")
    print(
        f"{len(questions)} BBQ {args.category} items (whole template fills), {args.scoring}, reference prompt; "
        f"{torch.get_num_threads()} threads; load average {min(load):.2f}-{max(load):.2f} during the run"
    )
    print(
        f"tokens: {naive_tokens} naive (every token of every item once), {unique_tokens} distinct prefixes "
        f"({naive_tokens / unique_tokens:.2f}x fewer)"
    )
    print(
        f"prefix tree plan: {plan_figures['rows']} rows of up to {plan_figures['max_row']} tokens "
        f"({plan_figures['packed_rows']} packed, {plan_figures['trunk_rows']} trunk rows kept for the rows below), "
        f"{plan_figures['batches']} batches, {plan_figures['padded_positions']} positions run with padding "
        f"({plan_figures['padded_positions'] / unique_tokens:.2f}x the distinct tokens)"
    )
    print(
        f"fp32 matmul {rate:.0f} GFLOP/s (mean of {len(rates)}, {min(rates):.0f}-{max(rates):.0f}); "
        f"naive ideal {naive_ideal:.2f} items/s, unique-token ideal {unique_ideal:.2f} items/s"
    )
    print(f"{'method':<44}{'items/s':>9}{'x (a)':>8}{'% naive':>9}{'% unique':>10}")
    for r in results.values():
        r["x_reference"] = r["items_per_s"] / base if base else None
        r["of_naive_ideal"] = r["items_per_s"] / naive_ideal
        r["of_unique_ideal"] = r["items_per_s"] / unique_ideal
        xa = f"{r['x_reference']:>8.2f}" if base else f"{'-':>8}"
        print(
            f"{r['label']:<44}{r['items_per_s']:>9.2f}{xa}"
            f"{100 * r['of_naive_ideal']:>8.0f}%{100 * r['of_unique_ideal']:>9.0f}%"
        )
    agree = {}
    for a, b in (("tl", "previous"), ("previous", "tree"), ("levels", "tree"), ("tl", "tree")):
        if a in results and b in results:
            agree[f"{a}_vs_{b}"] = sum(x == y for x, y in zip(results[a]["preds"], results[b]["preds"]))
            print(f"predictions {a} vs {b}: {agree[f'{a}_vs_{b}']}/{len(questions)} agree")
    for other in ("previous", "levels"):
        if "tree" in results and other in results:
            print(
                f"prefix tree vs {results[other]['label'][4:].strip()}: "
                f"{results['tree']['items_per_s'] / results[other]['items_per_s']:.2f}x"
            )
    if tree_memory:
        print(
            f"prefix tree keys/values: peak {tree_memory['peak_held_bytes'] / 2**20:.1f} MiB stored for children "
            f"(budget {DEFAULT_CACHE_BYTES / 2**20:.0f} MiB), peak {tree_memory['peak_batch_bytes'] / 2**20:.1f} MiB "
            f"in one batch's cache; {tree_memory['stored_segments']} segments stored, "
            f"{tree_memory['evicted_segments']} evicted"
        )
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"peak resident memory of this process: {peak_rss / 2**20:.0f} MiB")
    if lm_eval_out["skipped"]:
        print(f"(e) lm-evaluation-harness: skipped: {lm_eval_out['skipped']}")
    else:
        print(
            f"(e) lm-evaluation-harness BBQ task, {lm_eval_out['items']} items x {lm_eval_out['choices']} choices "
            f"(lm-eval prompt): {lm_eval_out['lm_eval_items_per_s']:.3f} items/s; lens_steer prefix tree on the "
            f"same items, format and choices: {lm_eval_out['tree_items_per_s']:.3f} items/s "
            f"({lm_eval_out['ratio']:.1f}x)"
        )
    if args.json:
        figures = {
            "items": len(questions),
            "category": args.category,
            "scoring": args.scoring,
            "threads": torch.get_num_threads(),
            "load_average": load,
            "naive_tokens": naive_tokens,
            "unique_tokens": unique_tokens,
            "scored_positions": scored,
            "unique_scored_positions": unique_scored,
            "matmul_gflops": rates,
            "flops_per_token": flops_token,
            "flops_per_scored_position": flops_logits,
            "naive_ideal_items_per_s": naive_ideal,
            "unique_ideal_items_per_s": unique_ideal,
            "methods": {k: {x: y for x, y in r.items() if x != "preds"} for k, r in results.items()},
            "agreement": agree,
            "lm_eval": lm_eval_out,
            "tree_memory": tree_memory,
            "tree_cache_budget_bytes": DEFAULT_CACHE_BYTES,
            "peak_rss_bytes": peak_rss,
            "tree_plan": plan_figures,
        }
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
