"""Options and helpers shared by subcommands (progress, model and data options, output and value checks)."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
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
    from lens_steer.models import ORGANISM_MODEL, load_model

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if args.model == ORGANISM_MODEL:
                return load_organism_model(args)
            return load_model(args.model, device=args.device, dtype=getattr(args, "dtype", "float32"), process_weights=getattr(args, "process_weights", False))
        except LensSteerError:
            raise
        except Exception as e:  # transformers / safetensors raise many types for a damaged checkpoint
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise LensSteerError(f"cannot load model {args.model!r} ({type(e).__name__}: {first}); check its files (config.json, weights, tokenizer) or re-download it") from None


def load_organism_model(args: argparse.Namespace) -> Any:
    """The cached default-recipe organism as a hooked model, built first (with a message) if absent."""
    from lens_steer.models import ORGANISM_MODEL, load_model
    from lens_steer.organism import OrganismRecipe, check_recipe, organism_folder, read_card

    folder = organism_folder()
    if read_card(folder) is None:
        print(f"{ORGANISM_MODEL} is not built yet: building it now into {folder} (once; about 25 minutes on 2 CPU cores)", file=sys.stderr, flush=True)
        from lens_steer.cli.organism import build

        build(OrganismRecipe(), folder, getattr(args, "data_dir", None))
    check_recipe(folder, OrganismRecipe())
    return load_model(str(folder), label=ORGANISM_MODEL, device=args.device, dtype=getattr(args, "dtype", "float32"), process_weights=getattr(args, "process_weights", False))


def check_out_folder(path: str | Path, flag: str = "--out") -> Path:
    """`path` as an output folder: refused (one line) when it is an existing file; nothing is created."""
    out = Path(path)
    for p in (out, *out.absolute().parents):
        if p.exists():
            if not p.is_dir():
                raise LensSteerError(f"{flag} {out}: {p} is an existing file, not a folder; give a folder path")
            if not os.access(p, os.W_OK | os.X_OK):
                raise LensSteerError(f"{flag} {out}: folder {p} is not writable for this user; choose another {flag}")
            break
    return out


def check_out_file(path: str | Path, flag: str = "--out") -> Path:
    """`path` as an output file: refused (one line) when it is an existing folder or lies under a file."""
    out = Path(path)
    if out.is_dir():
        raise LensSteerError(f"{flag} {out} is an existing folder; give a file path such as {out / 'vector.safetensors'}")
    check_out_folder(out.parent, flag)
    return out


def check_at_least(value: int | None, minimum: int, flag: str) -> None:
    """Refuse an integer option below `minimum` (None means "not given" and passes)."""
    if value is not None and value < minimum:
        raise LensSteerError(f"{flag} must be at least {minimum}, got {value}")


def progress_bar(total: int, desc: str) -> tuple[Callable[[int], None], Callable[[], None]]:
    """Progress on stderr: returns (update(n), close()). A tqdm bar on a terminal; in a log (stderr
    redirected) one line at the start, then one per tenth of `total` or per `LOG_SECONDS`, whichever comes first."""
    if sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False)
        return bar.update, bar.close
    return log_progress(total, desc)


LOG_SECONDS = 30.0


def log_progress(total: int, desc: str, *, every: int | None = None, seconds: float = LOG_SECONDS) -> tuple[Callable[[int], None], Callable[[], None]]:
    """Line-per-step progress for logs: "desc: k of total (p%)" every `every` items (default a tenth) or `seconds`."""
    import time

    step = every or max(1, total // 10)
    state = {"done": 0, "shown": 0, "at": time.monotonic()}
    print(f"{desc}: 0 of {total}", file=sys.stderr, flush=True)

    def show() -> None:
        done = state["done"]
        pct = f" ({100 * done / total:.0f}%)" if total else ""
        print(f"{desc}: {done} of {total}{pct}", file=sys.stderr, flush=True)
        state["shown"], state["at"] = done, time.monotonic()

    def update(n: int = 1) -> None:
        state["done"] += n
        if state["done"] - state["shown"] >= step or state["done"] >= total or time.monotonic() - state["at"] >= seconds:
            show()

    def close() -> None:
        if state["done"] != state["shown"]:
            show()

    return update, close
