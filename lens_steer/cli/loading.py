"""The model a command line names, loaded quietly; the bias model organism built first when it is not there yet."""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

from lens_steer.errors import LensSteerError


def load_model_from_args(args: argparse.Namespace) -> Any:
    """Load the model the options name, quietly."""
    from transformers.utils import logging as hf_logging

    from lens_steer.model.load import ORGANISM_MODEL, load_model

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if args.model == ORGANISM_MODEL:
                return load_organism_model(args)
            return load_model(
                args.model,
                device=args.device,
                dtype=getattr(args, "dtype", "float32"),
                process_weights=getattr(args, "process_weights", False),
            )
        except LensSteerError:
            raise
        except Exception as e:  # transformers / safetensors raise many types for a damaged checkpoint
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise LensSteerError(
                f"cannot load model {args.model!r} ({type(e).__name__}: {first}); check its files (config.json, "
                "weights, tokenizer) or re-download it"
            ) from None


def load_organism_model(args: argparse.Namespace) -> Any:
    """The cached default-recipe organism as a hooked model, built first (with a message) if absent."""
    from lens_steer.methods.organism.build import check_recipe, organism_folder, read_card
    from lens_steer.methods.organism.train import OrganismRecipe
    from lens_steer.model.load import ORGANISM_MODEL, load_model

    folder = organism_folder()
    if read_card(folder) is None:
        print(
            f"{ORGANISM_MODEL} is not built yet: building it now into {folder} (once; about 40 minutes on 2 CPU "
            "cores without native bf16; it prints its estimate)",
            file=sys.stderr,
            flush=True,
        )
        from lens_steer.cli.organism import build

        build(OrganismRecipe(), folder, getattr(args, "data_dir", None))
    check_recipe(folder, OrganismRecipe())
    return load_model(
        str(folder),
        label=ORGANISM_MODEL,
        device=args.device,
        dtype=getattr(args, "dtype", "float32"),
        process_weights=getattr(args, "process_weights", False),
    )
