"""lens_steer: steering-vector research on TransformerLens models.

Packages by concern, each importing only those below it (see each package's docstring): model, data < steering <
forward < extract, tasks < methods < pipeline < report < cli; the base modules (axes, errors, files, progress,
specs, stats, version) sit under them all."""

from lens_steer.version import __version__

__all__ = ["__version__"]
