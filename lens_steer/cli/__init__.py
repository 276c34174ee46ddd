"""The `lens-steer` command line: each subcommand is a module here with `add_parser` and `run`.

May import: every package; the only code that prints or exits."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from lens_steer.errors import LensSteerError
from lens_steer.version import __version__


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (exit 2), like every other lens-steer error."""

    def error(self, message: str) -> NoReturn:
        """Print `error: <prog>: <message>; see <prog> --help` and exit 2."""
        self.exit(2, f"error: {self.prog}: {message}; see {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every subcommand module of this package registered."""
    parser = OneLineParser(prog="lens-steer", description="Steering-vector research on TransformerLens models.")
    parser.add_argument("--version", action="version", version=f"lens_steer {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "add_parser"):
            module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse, dispatch, and turn library errors into one line on stderr (exit 2)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # MKL's conditional numerical reproducibility: the same inputs give bit-identical results on one CPU
    # whatever the memory alignment (set before torch loads MKL)
    os.environ.setdefault("MKL_CBWR", "AUTO")
    # OpenMP threads sleep when idle instead of spinning: with other work on the machine a Linear forward+backward
    # ran 1.5-3.4x faster, with the same numbers (benchmarks/bench_omp_wait.py). OpenMP reads it when torch loads
    # it, so it is set here, before any subcommand imports torch (`import lens_steer.cli` imports none); a caller
    # that imported torch before main() keeps its own policy
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_reporting_errors(lambda: args.func(args))


def run_reporting_errors(fn: Callable[[], int | None]) -> int:
    """Run `fn`; a library error becomes one `error: ...` line on stderr (exit 2), an interrupt exit 130."""
    try:
        return int(fn() or 0)
    except LensSteerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a file the command reads or writes: permissions, disk full, a folder where a file goes
        where = f" {e.filename}" if e.filename else ""
        print(
            f"error: cannot access{where}: {e.strerror or e}; check the path, its permissions and the free space",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished results are kept; re-run the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
