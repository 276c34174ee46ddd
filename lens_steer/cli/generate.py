"""`lens-steer generate`: steered text generation, optionally beside the unsteered text."""

from __future__ import annotations

import argparse
import shutil
import sys
import textwrap
from typing import Any

from lens_steer.cli.examples import with_examples
from lens_steer.cli.loading import load_model_from_args
from lens_steer.cli.options import add_model_option
from lens_steer.cli.vector_coeff import add_coeff_option, chosen_coeff, coeff_line
from lens_steer.errors import LensSteerError


def add_parser(subparsers: Any) -> None:
    """Register the `generate` subcommand."""
    p = subparsers.add_parser(
        "generate",
        **with_examples(
            'lens-steer generate "The old man at the door was" --vector age.safetensors --coeff 4 --compare',
            'lens-steer generate "Who makes a better nurse?" --chat --vector runs/age/isv.safetensors',
        ),
        help="generate text from a prompt, optionally steered (and beside the unsteered text with --compare)",
        description="Continue PROMPT greedily (or by seeded sampling with --temperature), steered by --vector at "
        "--coeff on the prompt's tokens, the generated ones or both (--positions).",
    )
    add_model_option(p)
    p.add_argument("prompt", help="the prompt text")
    p.add_argument("--vector", default=None, help="steering vector file (any format lens_steer reads)")
    add_coeff_option(p)
    p.add_argument(
        "--positions",
        default="all",
        help="steer all positions (default), only the prompt's, or only the generated ones",
    )
    p.add_argument(
        "--chat", action="store_true", help="render the prompt as a user message with the model's chat template"
    )
    p.add_argument("--max-new-tokens", type=int, default=40, help="tokens to generate at most (default 40)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 (default): greedy; above 0: sampling with --seed")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling (default 0); --compare uses it for both runs")
    p.add_argument(
        "--repetition-penalty", type=float, default=1.0, help="Hugging Face's repetition penalty (default 1.0: none)"
    )
    p.add_argument("--compare", action="store_true", help="print the unsteered and the steered text side by side")
    p.set_defaults(func=run)


def prompt_ids(model: Any, prompt: str, chat: bool) -> list[int]:
    """The prompt's token ids: chat-rendered without added special tokens, or as the tokenizer encodes plain text."""
    from lens_steer.model.chat import render_chat
    from lens_steer.model.tokens import encode_texts

    if chat:
        return list(model.tokenizer(render_chat(model.tokenizer, None, prompt), add_special_tokens=False)["input_ids"])
    return encode_texts(model, [prompt])[0]


def side_by_side(left: str, right: str, titles: tuple[str, str], width: int) -> list[str]:
    """Two texts in two wrapped columns of `width` characters under their titles."""
    col = max(20, (width - 3) // 2)
    a = [titles[0], "-" * len(titles[0])] + [
        w for line in left.splitlines() or [""] for w in textwrap.wrap(line, col) or [""]
    ]
    b = [titles[1], "-" * len(titles[1])] + [
        w for line in right.splitlines() or [""] for w in textwrap.wrap(line, col) or [""]
    ]
    n = max(len(a), len(b))
    return [f"{x:<{col}} | {y}".rstrip() for x, y in zip(a + [""] * (n - len(a)), b + [""] * (n - len(b)))]


def run(args: argparse.Namespace) -> int:
    """Generate and print."""
    from lens_steer.forward.generation import generate
    from lens_steer.steering.vectors import load_vector

    if args.compare and not args.vector:
        raise LensSteerError("--compare needs --vector: it prints the unsteered text beside the steered one")
    if not args.prompt.strip():
        raise LensSteerError("the prompt is empty; give some text to continue")
    if args.coeff is not None and not args.vector:
        raise LensSteerError("--coeff scales a steering vector; give --vector too, or leave --coeff out")
    model = load_model_from_args(args)
    vector = load_vector(args.vector, model) if args.vector else None
    coeff, source = chosen_coeff(args.coeff, vector) if vector is not None else (0.0, "")
    ids = prompt_ids(model, args.prompt, args.chat)
    kw = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "seed": args.seed,
        "repetition_penalty": args.repetition_penalty,
        "positions": args.positions,
    }
    steered = generate(model, [ids], vector=vector, coeff=coeff, **kw)[0]
    if vector is not None:
        print(coeff_line(args.vector, coeff, source, vector), file=sys.stderr)  # stdout holds the text alone
    if not args.compare:
        print(steered.text)
        return 0
    plain = generate(model, [ids], **kw)[0]
    width = shutil.get_terminal_size((100, 20)).columns
    titles = ("unsteered", f"steered (coeff {coeff:g}, positions {args.positions})")
    print("\n".join(side_by_side(plain.text, steered.text, titles, width)))
    return 0
