"""Mean ISV trial time: lens_steer's search trial against a naive trial, on the same trial parameters, same run.

    python benchmarks/bench_search.py [--trials 6] [--limit 16] [--axes age,religion] [--json out.json]

lens_steer trial (`IsvObjective`): contrastive activations come from an `ActivationCache` (a dataset read only as
deep as the trial's layer until a trial needs more, each side's shared system prompt run once, grown on demand, kept on
disk and shared between the axes' studies, as `reproduce` does); items are scored with `score_questions` (a prefix tree:
each distinct token prefix of the items' sequences runs once, logits only where scored) and the items' residual entering
the trial's first steered block is reused from earlier trials (`ResidualCache`). Naive trial (re-extract, full forward):
read the trial's pairs with plain full forward passes (batches of 8 in file order, hooks at the trial's layers), then
score with plain full forward passes (batches of 8, full-sequence logits; cloze: one sequence per option). Both use the
same protocol (`--scoring cloze`, the search's default, or `letter`), so both pick the same answers; the objective
values are compared. The trial parameters come from TPE studies (one per axis, in order) driven by the lens_steer
trials.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import optuna
import torch


def main() -> int:
    """Run the benchmark and print the numbers."""
    from lens_steer.axes import get_axis
    from lens_steer.extract.activation_cache import ActivationCache
    from lens_steer.extract.activations import PairActivations, vector_from_activations
    from lens_steer.extract.pairs import persona_pairs
    from lens_steer.forward.questions import cloze_prompt, letter_prompt
    from lens_steer.methods.isv import VECTOR_SCALE
    from lens_steer.methods.search.objective import IsvObjective
    from lens_steer.methods.search.space import SearchConfig, SearchSpace
    from lens_steer.methods.search.storage import open_storage, open_study
    from lens_steer.methods.search.workers import run_trials
    from lens_steer.model.load import load_model, model_identity
    from lens_steer.model.tokens import encode_texts, pad_batch, pad_id
    from lens_steer.steering.hooks import steer
    from lens_steer.tasks.bbq import bbq_question

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--axes", default="age,religion")
    ap.add_argument("--trials", type=int, default=6, help="trials per axis")
    ap.add_argument("--limit", type=int, default=16, help="validation items per trial")
    ap.add_argument("--scoring", default="cloze", choices=["cloze", "letter"])
    ap.add_argument("--json", default=None, help="write every timing and ratio to this file")
    args = ap.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(args.model)
    n = int(model.cfg.n_layers)
    space = SearchSpace(
        corpora=("age", "religion", "genericqa"),
        num_sents=(50, 150, 50),
        personas=(0, 1, 3),
        templates=(0, 1),
        coeff=(-4.0, 4.0, 0.4),
        layers=tuple((i,) for i in range(n // 3, n - 2, 4)),
        methods=("pca_diff", "mean_diff"),
    ).resolve(n)
    cfg = SearchConfig(
        space=space,
        n_trials=args.trials,
        limit=args.limit,
        chunk_size=args.limit,
        scoring=args.scoring,
        tpe_startup_trials=3,
    )
    disk = tempfile.mkdtemp(prefix="bench_search_")
    letter_ids = [model.tokenizer(x, add_special_tokens=False)["input_ids"][0] for x in "abc"]

    def naive_trial(params: dict, items: list) -> float:
        layers = [int(x) for x in str(params["layers"]).split(",")]
        pairs = persona_pairs(
            params["corpus"],
            int(params["num_sents"]),
            int(params["persona"]),
            int(params["template"]),
            tokenizer=model.tokenizer,
        )
        vec = vector_from_activations(naive_activations(pairs, layers), params["method"], layers, scale=VECTOR_SCALE)
        with steer(model, [(vec, float(params["coeff"]))]), torch.inference_mode():
            preds = naive_cloze(items) if args.scoring == "cloze" else naive_letter(items)
        return sum(p == it.label for p, it in zip(preds, items)) / len(items)

    def naive_activations(pairs, layers: list[int]) -> PairActivations:
        sides = []
        for side in ("positive", "negative"):
            ids = encode_texts(model, [getattr(p, side) for p in pairs.pairs])
            acts: dict[int, list] = {layer: [] for layer in layers}
            for s in range(0, len(ids), 8):
                batch = pad_batch(ids[s : s + 8], pad_id=pad_id(model), padding_side="right")
                rows = torch.arange(len(batch.lengths))

                def grab(t: torch.Tensor, hook, rows=rows, last=batch.last_index) -> None:
                    acts[int(hook.name.split(".")[1])].append(t[rows, last].float())

                with (
                    torch.inference_mode(),
                    model.hooks(fwd_hooks=[(f"blocks.{layer}.hook_resid_post", grab) for layer in layers]),
                ):
                    model(batch.tokens)
            sides.append({layer: torch.cat(v) for layer, v in acts.items()})
        ident = model_identity(model)
        return PairActivations(
            sides[0],
            sides[1],
            "hook_resid_post",
            ident.name,
            ident.d_model,
            dict(ident.processing),
            dict(pairs.provenance),
        )

    def naive_letter(items: list) -> list[int]:
        ids = encode_texts(
            model, [letter_prompt(bbq_question(i), range(3), "reference", model.tokenizer)[0] for i in items]
        )
        preds: list[int] = []
        for s in range(0, len(ids), 8):
            batch = pad_batch(ids[s : s + 8], pad_id=pad_id(model), padding_side="right")
            preds += (
                model(batch.tokens)[torch.arange(len(batch.lengths)), batch.last_index][:, letter_ids]
                .argmax(-1)
                .tolist()
            )
        return preds

    def naive_cloze(items: list) -> list[int]:
        seqs, spans = [], []
        for it in items:
            prompt, conts = cloze_prompt(bbq_question(it), "reference", model.tokenizer)
            p_ids = encode_texts(model, [prompt])[0]
            for c in conts:
                c_ids = model.tokenizer(c, add_special_tokens=False)["input_ids"]
                seqs.append(p_ids + c_ids)
                spans.append((len(p_ids), c_ids))
        scores: list[float] = []
        for s in range(0, len(seqs), 8):
            batch = pad_batch(seqs[s : s + 8], pad_id=pad_id(model), padding_side="right")
            logp = torch.log_softmax(model(batch.tokens).float(), -1)
            for row, (n, c_ids) in enumerate(spans[s : s + 8]):
                scores.append(sum(float(logp[row, n - 1 + i, t]) for i, t in enumerate(c_ids)))
        return [max(range(3), key=lambda k: scores[3 * j + k]) for j in range(len(items))]

    rows = []
    blocks_read = 0
    for axis_name in args.axes.split(","):
        axis = get_axis(axis_name)
        cache = ActivationCache(model, space.all_layers, disk_dir=disk)
        fast = IsvObjective(model, axis, cfg, cache=cache)
        study, _ = open_study(open_storage(None), f"bench-{axis.name}", config=cfg)

        def timed(params: dict, trial: optuna.Trial, fast: IsvObjective = fast, axis: str = axis.name) -> float:
            t = time.perf_counter()
            value = fast(params)
            dt_fast = time.perf_counter() - t
            t = time.perf_counter()
            naive_value = naive_trial(params, fast.items)
            dt_naive = time.perf_counter() - t
            rows.append((axis, dt_fast, dt_naive, value, naive_value))
            print(
                f"{axis} trial {len(rows)}: lens_steer {dt_fast:.1f}s, naive {dt_naive:.1f}s (accuracy {value:.3f} vs "
                f"{naive_value:.3f})",
                file=sys.stderr,
                flush=True,
            )
            return value

        run_trials(study, timed, space, args.trials, seed=0)
        blocks_read += cache.layer_reads
    mf, mn = statistics.mean(r[1] for r in rows), statistics.mean(r[2] for r in rows)
    agree = sum(abs(r[3] - r[4]) < 1e-9 for r in rows)
    print(
        f"model {args.model}, axes {args.axes}, {len(rows)} trials, {args.limit} validation items each "
        f"({args.scoring} scoring), {torch.get_num_threads()} threads"
    )
    print(
        f"mean trial time: lens_steer {mf:.2f}s, naive {mn:.2f}s, ratio {mn / mf:.2f}x; objective values agree on "
        f"{agree}/{len(rows)} trials"
    )
    print(f"contrastive reads by lens_steer: {blocks_read} (pairs read x blocks run, summed over reads)")
    per_axis = {}
    for axis in dict.fromkeys(r[0] for r in rows):
        sub = [r for r in rows if r[0] == axis]
        per_axis[axis] = {
            "lens_steer_s": statistics.mean(r[1] for r in sub),
            "naive_s": statistics.mean(r[2] for r in sub),
        }
        print(f"  {axis}: lens_steer {per_axis[axis]['lens_steer_s']:.2f}s, naive {per_axis[axis]['naive_s']:.2f}s")
    if args.json:
        figures = {
            "model": args.model,
            "axes": args.axes.split(","),
            "trials_per_axis": args.trials,
            "limit": args.limit,
            "scoring": args.scoring,
            "threads": torch.get_num_threads(),
            "load_average": os.getloadavg(),
            "mean_lens_steer_s": mf,
            "mean_naive_s": mn,
            "ratio": mn / mf,
            "objective_agree": agree,
            "per_axis": per_axis,
            "pairs_times_blocks_read": blocks_read,
            "trials": [
                {"axis": a, "lens_steer_s": f, "naive_s": nv, "value": v, "naive_value": w} for a, f, nv, v, w in rows
            ],
        }
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
