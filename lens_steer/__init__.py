"""lens_steer: steering-vector research on TransformerLens models.

Packages by concern, each importing only those below it (see each package's docstring): model, data < steering <
forward < extract, tasks < methods < pipeline < report < cli; the base modules (axes, errors, files, progress,
specs, stats, version) sit under them all.

The front door, for a script: `from lens_steer import load_model, pairs, extract_vector, steer, evaluate` (and
`SteeringVector`, `load_vector`, `export_vector`, `BenchResult`, the interventions). Each name is imported from its
module the first time it is used, so `import lens_steer.errors` stays light and this module imports no other at
import time. (Extraction is `extract_vector`, not `extract`: that name is the subpackage `lens_steer.extract`, which
`import lens_steer.extract.<module>` needs as it is.)"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lens_steer.version import __version__

# name -> (module, attribute in it; None for the module itself)
EXPORTS: dict[str, tuple[str, str | None]] = {
    "load_model": ("lens_steer.model.load", "load_model"),
    "pairs": ("lens_steer.extract.pair_builders", None),
    "extract_vector": ("lens_steer.extract.activations", "extract_vector"),
    "steer": ("lens_steer.steering.hooks", "steer"),
    "evaluate": ("lens_steer.tasks.evaluate", "evaluate"),
    "SteeringVector": ("lens_steer.steering.vectors", "SteeringVector"),
    "load_vector": ("lens_steer.steering.vectors", "load_vector"),
    "export_vector": ("lens_steer.steering.export", "export_vector"),
    "BenchResult": ("lens_steer.tasks.result", "BenchResult"),
    "Intervention": ("lens_steer.steering.interventions", "Intervention"),
    "Additive": ("lens_steer.steering.interventions", "Additive"),
    "DirectionalAblation": ("lens_steer.steering.interventions", "DirectionalAblation"),
    "LeaceErasure": ("lens_steer.steering.interventions", "LeaceErasure"),
    "GatedAdditive": ("lens_steer.steering.interventions", "GatedAdditive"),
    "load_intervention": ("lens_steer.steering.interventions", "load_intervention"),
}

if TYPE_CHECKING:  # what the names are, for type checkers and editors
    from lens_steer.extract import pair_builders as pairs
    from lens_steer.extract.activations import extract_vector
    from lens_steer.model.load import load_model
    from lens_steer.steering.export import export_vector
    from lens_steer.steering.hooks import steer
    from lens_steer.steering.interventions import (
        Additive,
        DirectionalAblation,
        GatedAdditive,
        Intervention,
        LeaceErasure,
        load_intervention,
    )
    from lens_steer.steering.vectors import SteeringVector, load_vector
    from lens_steer.tasks.evaluate import evaluate
    from lens_steer.tasks.result import BenchResult


def __getattr__(name: str) -> Any:
    """A front-door name, imported from its module on first use (PEP 562)."""
    if name not in EXPORTS:
        raise AttributeError(f"module 'lens_steer' has no attribute {name!r}")
    module, attr = EXPORTS[name]
    value = importlib.import_module(module) if attr is None else getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *EXPORTS])


__all__ = [  # EXPORTS' names, written out for tools that read __all__ without running this module
    "__version__",
    "load_model",
    "pairs",
    "extract_vector",
    "steer",
    "evaluate",
    "SteeringVector",
    "load_vector",
    "export_vector",
    "BenchResult",
    "Intervention",
    "Additive",
    "DirectionalAblation",
    "LeaceErasure",
    "GatedAdditive",
    "load_intervention",
]
