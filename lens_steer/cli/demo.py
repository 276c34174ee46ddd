"""`lens-steer demo`: extract one axis's steering vector and show how it shifts answer probabilities on BBQ items."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from lens_steer.cli.examples import with_examples
from lens_steer.cli.loading import load_model_from_args
from lens_steer.cli.options import Subparsers, add_data_option, add_model_option, progress_bar


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "demo",
        **with_examples("lens-steer demo", "lens-steer demo --axis religion --coeff 8 --items 12"),
        help="steer the model along one bias axis and print the shift on a few BBQ items",
    )
    add_model_option(p)
    add_data_option(p)
    p.add_argument("--axis", default="age", help="bias axis (default age)")
    p.add_argument("--layers", default="20", help="layers to steer (default 20)")
    p.add_argument("--coeff", type=float, default=4.0, help="multiple of the mean difference (CAA) vector (default 4)")
    p.add_argument("--num-sents", type=int, default=100, help="contrastive prompts from the axis's corpus (default 50)")
    p.add_argument("--items", type=int, default=6, help="BBQ validation items to show (default 6)")
    p.add_argument("--out", default=None, help="optional folder for the vector (vector.safetensors)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lens_steer.axes import get_axis
    from lens_steer.data.select import select
    from lens_steer.extract.activations import extract_vector
    from lens_steer.extract.pairs import persona_pairs
    from lens_steer.forward.scoring import maybe_steer, score_questions
    from lens_steer.specs import parse_layers
    from lens_steer.tasks.bbq import bbq_question

    axis = get_axis(args.axis)
    model = load_model_from_args(args)
    layers = list(parse_layers(args.layers))
    pairs = persona_pairs(axis.default_corpus, args.num_sents, 0, 0, tokenizer=model.tokenizer, data_root=args.data_dir)
    update, close = progress_bar(2 * len(pairs), "extract")
    try:
        vector = extract_vector(model, pairs, layers, method="mean_diff", progress=update)
    finally:
        close()
    items = select(axis.name, "validation", args.items, data_root=args.data_dir)
    questions = [bbq_question(i) for i in items]
    base = score_questions(model, questions)
    with maybe_steer(model, vector, args.coeff):
        steered = score_questions(model, questions)
    norms = ", ".join(f"{n:.1f}" for n in vector.norms().values())
    print(
        f"{axis.name}: mean_diff vector (norm {norms}) from {len(pairs)} persona pairs ({axis.default_corpus} "
        f"corpus), layers {layers}, coeff {args.coeff:+g}"
    )
    print("answer probabilities (cloze, reference prompt), unsteered -> steered; * = label, u = unknown, b = biased")
    for it, b, s in zip(items, base, steered):
        print(
            f"\n[{it.context_condition}/{it.question_polarity}] "
            f"{it.context[:110]}{'...' if len(it.context) > 110 else ''}"
        )
        print(f"  Q: {it.question}")
        for k, answer in enumerate(it.answers):
            tag = ("*" if k == it.label else " ") + (
                "u" if k == it.unknown_index else "b" if k in it.biased_indices else " "
            )
            print(f"  {tag} {answer[:40]:<40} {math.exp(b.option_scores[k]):.3f} -> {math.exp(s.option_scores[k]):.3f}")
    if args.out:
        path = vector.save(Path(args.out) / "vector.safetensors")
        print(f"\nwrote {path}")
    return 0
