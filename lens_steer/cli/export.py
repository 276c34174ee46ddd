"""`lens-steer export`: write a steering vector as lm-evaluation-harness, llama.cpp or plain Hugging Face use it."""

from __future__ import annotations

import argparse
from typing import Any

from lens_steer.cli.examples import with_examples
from lens_steer.cli.vector_coeff import add_coeff_option, chosen_coeff
from lens_steer.steering.export import export_targets, export_vector
from lens_steer.steering.formats import EXPORT_FORMATS, architecture_of

USAGE = {
    "lm-eval": "lm_eval --model steered --model_args pretrained=<HF id or folder>,steer_path={out} --tasks ...",
    "gguf": "llama-cli -m <model.gguf> --control-vector {out}   (the coefficient is in the file; "
    "--control-vector-scaled {out} S rescales)",
    "hf": "from lens_steer.steering.hf import steer_hf; with steer_hf(hf_model, '{out}'): hf_model.generate(...)",
}


def add_parser(subparsers: Any) -> None:
    """Register the `export` subcommand."""
    p = subparsers.add_parser(
        "export",
        **with_examples(
            "lens-steer export age.safetensors --to lm-eval --coeff 2 --out age.pt",
            "lens-steer export runs/age/isv.safetensors --to gguf --out age.gguf",
        ),
        help="export a steering vector for lm-evaluation-harness, llama.cpp (GGUF) or plain Hugging Face hooks",
        description="Write VECTOR, applied at --coeff, as lm-eval's steered-model .pt (Hugging Face module names), a "
        "repeng/llama.cpp control-vector GGUF (direction.N = block N's output), or a safetensors file of full module "
        "names for lens_steer.steering.hf.steer_hf. Hook points a format cannot carry are refused and nothing is "
        "written.",
    )
    p.add_argument("vector", help="the vector file (lens_steer safetensors, or any format lens_steer imports)")
    p.add_argument("--to", required=True, help=f"target format: {', '.join(EXPORT_FORMATS)}")
    add_coeff_option(
        p,
        "steering coefficient the file applies (default: the vector's stored coefficient, e.g. an ISV's, else 1)",
    )
    p.add_argument("--out", required=True, help="output file (lm-eval needs .pt or .pth); written atomically")
    p.add_argument(
        "--arch",
        default=None,
        help="Hugging Face model_type (e.g. llama) when the vector's model name does not tell it",
    )
    p.add_argument(
        "--model",
        default=None,
        help="model to check the vector against (needed to import a foreign file without metadata)",
    )
    p.set_defaults(func=run, device="cpu", process_weights=False)


def run(args: argparse.Namespace) -> int:
    """Export and print where each hook point went and how the other tool loads the file."""
    from lens_steer.steering.vectors import load_vector

    model = None
    if args.model:
        from lens_steer.cli.loading import load_model_from_args

        model = load_model_from_args(args)
    vector = load_vector(args.vector, model)
    arch = architecture_of(vector.metadata.model_name, args.arch)
    targets = export_targets(vector, args.to, arch)
    coeff, source = chosen_coeff(args.coeff, vector)
    out = export_vector(vector, args.to, coeff, args.out, arch=arch)
    print(f"wrote {out}: {args.to} for {arch} ({vector.metadata.model_name}), coefficient {coeff:g} ({source})")
    for hook, target in targets.items():
        print(f"  {hook} -> {target}")
    if args.to == "lm-eval" and len(targets) > 1:
        print("  note: lm-eval before 0.4.9.2 adds the last entry's vector at every hook point; use 0.4.9.2 or later")
    print("use: " + USAGE[args.to].format(out=out))
    return 0
