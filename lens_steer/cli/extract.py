"""`lens-steer extract`: a steering vector from a JSONL file of contrastive pairs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lens_steer.cli.examples import with_examples
from lens_steer.cli.loading import load_model_from_args
from lens_steer.cli.options import add_model_option, check_out_file, progress_bar
from lens_steer.errors import LensSteerError
from lens_steer.extract.activations import AGGREGATORS, extract_vector
from lens_steer.extract.pairs import ContrastivePair, PairSet, load_pairs_jsonl
from lens_steer.model.chat import render_chat
from lens_steer.model.load import check_layers
from lens_steer.specs import parse_layers
from lens_steer.steering.vectors import HOOK_KINDS, scale_meaning


def add_parser(subparsers: Any) -> None:
    """Register the `extract` subcommand."""
    p = subparsers.add_parser(
        "extract",
        **with_examples(
            "lens-steer extract --pairs pairs.jsonl --layers 15 --out age.safetensors",
            "lens-steer extract --pairs pairs.jsonl --layers 10-20 --method mean_diff --chat --out age.safetensors",
        ),
        help="extract a steering vector from contrastive pairs (JSONL)",
        description='Read {"positive": ..., "negative": ...} pairs, take the residual stream at each side\'s last '
        "token at the given layers, aggregate, and write a safetensors steering vector.",
    )
    add_model_option(p)
    p.add_argument(
        "--pairs", required=True, help='JSONL file, one {"positive": "...", "negative": "..."} object a line'
    )
    p.add_argument("--layers", required=True, help="layers to read, e.g. '10,15' or '10-15'")
    p.add_argument("--method", default="pca_diff", choices=list(AGGREGATORS), help="aggregator (default: pca_diff)")
    p.add_argument(
        "--hook", default="hook_resid_post", choices=list(HOOK_KINDS), help="hook point kind (default: hook_resid_post)"
    )
    p.add_argument("--out", required=True, help="output .safetensors file (written atomically)")
    p.add_argument(
        "--chat", action="store_true", help="render each side as a user message with the model's chat template"
    )
    p.add_argument("--batch-size", type=int, default=16, help="texts per forward pass (default: 16)")
    p.set_defaults(func=run)


def chat_pairs(pairs: PairSet, tokenizer: Any) -> PairSet:
    """Each side rendered as a user message through the tokenizer's chat template."""
    rendered = tuple(
        ContrastivePair(render_chat(tokenizer, None, p.positive), render_chat(tokenizer, None, p.negative))
        for p in pairs
    )
    name = str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)
    return PairSet(rendered, {**pairs.provenance, "chat": True, "tokenizer": name})


def run(args: argparse.Namespace) -> int:
    """Extract, save and print a per-layer summary."""
    if args.batch_size < 1:
        raise LensSteerError(f"--batch-size must be at least 1, got {args.batch_size}")
    check_out_file(args.out)
    pairs = load_pairs_jsonl(args.pairs)
    layers = list(parse_layers(args.layers))
    model = load_model_from_args(args)
    check_layers(model, layers)
    if args.chat:
        pairs = chat_pairs(pairs, model.tokenizer)
    update, close = progress_bar(2 * len(pairs), "extract")
    try:
        vector = extract_vector(
            model,
            pairs,
            layers,
            method=args.method,
            hook=args.hook,
            prepend_bos=False if args.chat else None,
            max_batch=args.batch_size,
            progress=update,
        )
    finally:
        close()
    out = vector.save(Path(args.out))
    print(f"wrote {out}: {args.method} from {len(pairs)} pairs, model {vector.metadata.model_name}, hook {args.hook}")
    print(f"  coefficient 1 = {scale_meaning(vector.scale)}")
    for layer, norm in vector.norms().items():
        print(f"  layer {layer}: norm {norm:.4f}")
    return 0
