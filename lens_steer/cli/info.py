"""`lens-steer info`: a model's name, depth, width, weight processing and hook points."""

from __future__ import annotations

import argparse
from typing import Any

from lens_steer.cli.examples import with_examples
from lens_steer.cli.loading import load_model_from_args
from lens_steer.cli.options import add_model_option
from lens_steer.model.architectures import describe_family
from lens_steer.model.load import HookedModel, model_identity
from lens_steer.steering.vectors import HOOK_KINDS


def add_parser(subparsers: Any) -> None:
    """Register the `info` subcommand."""
    p = subparsers.add_parser(
        "info",
        **with_examples("lens-steer info", "lens-steer info --model tiny-llama --all-hooks"),
        help="show a model's layers, d_model, weight processing and hook points",
        description="Load a model and print what steering vectors for it must match: name, layers, d_model, "
        "weight-processing flags, and the hook point kinds each block offers.",
    )
    add_model_option(p)
    p.add_argument("--all-hooks", action="store_true", help="also list every hook point name of block 0")
    p.set_defaults(func=run)


def block_hook_kinds(model: HookedModel, layer: int = 0) -> tuple[list[str], list[str]]:
    """(steerable kinds, other per-block hook suffixes) present in block `layer`."""
    prefix = f"blocks.{layer}."
    suffixes = [name[len(prefix) :] for name in model.hook_dict if name.startswith(prefix)]
    steerable = [kind for kind in HOOK_KINDS if kind in suffixes]
    others = sorted(s for s in suffixes if s not in steerable)
    return steerable, others


def describe(model: HookedModel, *, all_hooks: bool = False) -> list[str]:
    """The lines `info` prints for `model`."""
    ident = model_identity(model)
    steerable, others = block_hook_kinds(model)
    flags = ", ".join(f"{k}={v}" for k, v in ident.processing.items()) or "none recorded"
    last = ident.n_layers - 1
    kind = "hook_resid_post" if "hook_resid_post" in steerable else (steerable or others or ["?"])[0]
    examples = [f"blocks.{layer}.{kind}" for layer in sorted({0, ident.n_layers // 2, last})]
    lines = [
        f"model: {ident.name} ({type(model).__name__})",
        *describe_family(model),
        f"layers: {ident.n_layers} (0..{last})",
        f"d_model: {ident.d_model}",
        f"weight processing: {flags}",
        f"steerable hook kinds per block: {', '.join(steerable)}",
        f"other hook points per block: {len(others)}",
        f"examples: {', '.join(examples)}",
    ]
    if all_hooks:
        lines += [f"  blocks.0.{s}" for s in steerable + others]
    return lines


def run(args: argparse.Namespace) -> int:
    """Print the model description."""
    model = load_model_from_args(args)
    print("\n".join(describe(model, all_hooks=args.all_hooks)))
    return 0
