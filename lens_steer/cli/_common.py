"""Options and helpers shared by subcommands (progress bars, model and data options)."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from typing import Any

from lens_steer.errors import LensSteerError


def add_model_option(parser: argparse.ArgumentParser) -> None:
    """--model, --device, --dtype and --process-weights."""
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model name, local folder or Hugging Face id (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, mps)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"), help="weights and activations dtype (default float32; bfloat16 on a GPU); vectors are stored in float32 either way")
    parser.add_argument("--process-weights", action="store_true", help="TransformerLens weight processing (fold LayerNorm etc.)")


def add_data_option(parser: argparse.ArgumentParser) -> None:
    """--data-dir (else LENS_STEER_DATA, else ../shared/data beside the repository)."""
    parser.add_argument("--data-dir", default=None, help="data root with bbq/, mmlu/, prompt_corpora/, crows_pairs/ (default: $LENS_STEER_DATA)")


def load_model_from_args(args: argparse.Namespace) -> Any:
    """Load the model the options name, quietly."""
    from lens_steer.models import load_model

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(args.model, device=args.device, dtype=getattr(args, "dtype", "float32"), process_weights=getattr(args, "process_weights", False))


def parse_int_list(text: str, *, what: str = "layers") -> list[int]:
    """'10,15' or '10-15' or '10-15,20' into ints."""
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise LensSteerError(f"cannot read {what} {text!r}; write e.g. '10,15' or '10-15'") from None
    if not out:
        raise LensSteerError(f"no {what} given in {text!r}")
    return out


def progress_bar(total: int, desc: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    """A tqdm bar on stderr: returns (update(n), close())."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False, disable=None)
    return bar.update, bar.close
