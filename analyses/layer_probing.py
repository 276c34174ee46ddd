"""Layer-wise probing: held-out accuracy of linear probes by layer, for persona pairs and for BBQ answer pairs.

Run: python analyses/layer_probing.py [--out out/layer_probing] [--model smollm2-135m-instruct] [--axis age] ...
Writes probe.csv and probe.html to the output folder.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from lens_steer.axes import get_axis
from lens_steer.cli import run_reporting_errors
from lens_steer.cli.loading import load_model_from_args
from lens_steer.cli.options import analysis_parser
from lens_steer.data.bbq import load_bbq
from lens_steer.data.select import limit_bbq
from lens_steer.data.splits import select_split
from lens_steer.extract.activations import pair_activations
from lens_steer.extract.pairs import axis_persona_pairs, bbq_answer_pairs
from lens_steer.files import atomic_write_text, write_json
from lens_steer.methods.probe import pair_dataset, probe_accuracy, probe_layers
from lens_steer.methods.sweep import rows_to_csv
from lens_steer.report.plots import probe_figure, write_figure


def main(argv: list[str] | None = None) -> int:
    p = analysis_parser(__doc__, "layer_probing")
    p.add_argument("--axis", default="age")
    p.add_argument("--num-sents", type=int, default=40, help="persona pairs (default 40)")
    p.add_argument("--bbq-items", type=int, default=80, help="BBQ train items to build answer pairs from (default 80)")
    p.add_argument("--layer-step", type=int, default=1, help="probe every k-th layer (default 1: all)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--l2", type=float, default=1e-2)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(args.out)
    t0 = time.time()
    ax = get_axis(args.axis)
    model = load_model_from_args(args)
    layers = list(range(0, int(model.cfg.n_layers), args.layer_step))
    kw = {"n_folds": args.folds, "l2": args.l2, "n_boot": args.n_boot, "seed": args.seed}
    rows: list[dict] = []

    def add(task: str, layer: int, score) -> None:
        rows.append({"task": task, "layer": layer, **score.to_dict()})

    persona = axis_persona_pairs(ax.name, model.tokenizer, num_sents=args.num_sents, data_root=args.data_dir)
    acts = pair_activations(model, persona, layers)
    print(f"[{time.time() - t0:.0f}s] read {len(persona)} persona pairs", file=sys.stderr)
    for layer, score in probe_layers(acts, **kw).items():
        add(
            f"persona pairs ({persona.provenance['corpus']}: {' vs '.join(persona.provenance['persona'])})",
            layer,
            score,
        )

    train = limit_bbq(
        select_split(load_bbq([ax.bbq_category], data_root=args.data_dir), "train", seed=args.seed),
        args.bbq_items,
        seed=args.seed,
    )
    answers = bbq_answer_pairs(train, split_name="train")
    by_id = {it.example_id: it for it in train}
    groups = [by_id[i].group_key for i in answers.provenance["example_ids"]]  # variants of one template share a fold
    bbq_acts = pair_activations(model, answers, layers)
    print(
        f"[{time.time() - t0:.0f}s] read {len(answers)} BBQ answer pairs from {len(train)} train items", file=sys.stderr
    )
    task = f"BBQ {ax.bbq_category} answers: gold/anti-stereotyped vs stereotyped letter"
    for layer, score in probe_layers(bbq_acts, pair_groups=groups, **kw).items():
        add(task, layer, score)
    # control: the two sides differ only in their last token (a letter); a probe on that letter's identity alone
    letters = [p.positive[-1] for p in answers] + [p.negative[-1] for p in answers]
    onehot = torch.tensor([[float(c == x) for x in "abc"] for c in letters])
    _, y, idx = pair_dataset(torch.zeros(len(answers), 1), torch.zeros(len(answers), 1))
    control = probe_accuracy(onehot, y, [groups[i] for i in idx], **kw)
    for layer in layers:
        add("control: final letter identity only", layer, control)

    atomic_write_text(out / "probe.csv", rows_to_csv(rows))
    name = model.cfg.model_name
    write_figure(
        probe_figure(
            rows,
            title=f"Held-out linear-probe accuracy by layer ({name}, axis {ax.name}, {args.folds}-fold, split by "
            "pair/group)",
        ),
        out / "probe.html",
    )
    write_json(
        out / "probe.json",
        {
            "model_name": name,
            "axis": ax.name,
            "persona_pairs": persona.provenance,
            "bbq_pairs": {k: v for k, v in answers.provenance.items() if k != "example_ids"},
            **kw,
            "layers": layers,
        },
    )
    print(f"wrote {out}/probe.csv, probe.html, probe.json in {time.time() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
