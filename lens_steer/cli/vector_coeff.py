"""The steering coefficient of a command that applies a vector file: `--coeff` when given, else the coefficient
stored with the vector (an ISV's), else 1 (the vector as it is); and the line that says which one was used."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING

from lens_steer.errors import LensSteerError

if TYPE_CHECKING:
    from lens_steer.steering.vectors import SteeringVector

COEFF_HELP = (
    "steering coefficient (default: the coefficient stored with the vector, e.g. an ISV's, else 1); "
    "coefficient 1 is the vector's unit, for extracted vectors the mean contrast at each layer"
)


def add_coeff_option(parser: argparse.ArgumentParser, help_text: str = COEFF_HELP) -> None:
    """--coeff, left None when not given so that the vector's stored coefficient can apply."""
    parser.add_argument("--coeff", type=float, default=None, help=help_text)


def chosen_coeff(given: float | None, vector: SteeringVector) -> tuple[float, str]:
    """(coefficient, where it came from): `given` (--coeff), else the vector's stored one, else 1
    (`lens_steer.tasks.evaluate.steering_coeff`, the library's rule)."""
    from lens_steer.tasks.evaluate import steering_coeff

    if given is not None and not math.isfinite(given):
        raise LensSteerError(f"--coeff must be a finite number, got {given}; write e.g. --coeff 2")
    if given is not None:
        source = "--coeff"
    else:
        source = "the vector's stored coefficient" if vector.coeff is not None else "default; the vector stores none"
    return steering_coeff(vector, given), source


def coeff_line(path: str, coeff: float, source: str, vector: SteeringVector) -> str:
    """ "steering with PATH at coefficient C (SOURCE; coefficient 1 = ...)"."""
    from lens_steer.steering.vectors import scale_meaning

    return f"steering with {path} at coefficient {coeff:g} ({source}; coefficient 1 = {scale_meaning(vector.scale)})"
