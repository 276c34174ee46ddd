"""Options and checks shared by subcommands: the model and data options, output and value checks, progress lines,
the type of the subcommand registry each `add_parser` receives, and the analyses scripts' common options."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from lens_steer.errors import LensSteerError
from lens_steer.progress import Progress


class Subparsers(Protocol):
    """What `argparse.ArgumentParser.add_subparsers()` returns, as far as an `add_parser(subparsers)` uses it."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser: ...


def add_model_option(parser: argparse.ArgumentParser) -> None:
    """--model, --device, --dtype and --process-weights."""
    parser.add_argument(
        "--model",
        default="smollm2-135m-instruct",
        help="model name, local folder or Hugging Face id (default: the embedded SmolLM2-135M-Instruct)",
    )
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1, mps)")
    parser.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16", "float16"),
        help="weights and activations dtype (default float32; bfloat16 on a GPU); vectors are stored in float32 "
        "either way",
    )
    parser.add_argument(
        "--process-weights", action="store_true", help="TransformerLens weight processing (fold LayerNorm etc.)"
    )


def add_data_option(parser: argparse.ArgumentParser) -> None:
    """--data-dir (else LENS_STEER_DATA, else ../shared/data beside the repository)."""
    parser.add_argument(
        "--data-dir",
        default=None,
        help="data root with bbq/, mmlu/, prompt_corpora/, crows_pairs/ (default: $LENS_STEER_DATA)",
    )


def analysis_parser(doc: str, name: str) -> argparse.ArgumentParser:
    """The parser of an analysis script (analyses/<name>.py): described by its docstring's first line, with
    --out (default out/<name>), --model, --device and --data-dir."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", default=f"out/{name}", help=f"output folder (default: out/{name})")
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data-dir", default=None, help="data root (default: $LENS_STEER_DATA or ../shared/data)")
    return parser


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
        raise LensSteerError(
            f"{flag} {out} is an existing folder; give a file path such as {out / 'vector.safetensors'}"
        )
    check_out_folder(out.parent, flag)
    return out


def check_at_least(value: int | None, minimum: int, flag: str) -> None:
    """Refuse an integer option below `minimum` (None means "not given" and passes)."""
    if value is not None and value < minimum:
        raise LensSteerError(f"{flag} must be at least {minimum}, got {value}")


LOG_SECONDS = 30.0


class ProgressReport:
    """Progress of `total` units on stderr, the command line's one way to show a `lens_steer.progress.Progress`:
    a tqdm bar on a terminal; in a log (stderr redirected) a line "desc: 0 of total" at the start, then
    "desc: k of total (p%)" per tenth of `total` or per `seconds`, whichever comes first, and at the end."""

    def __init__(self, total: int, desc: str, *, seconds: float = LOG_SECONDS) -> None:
        self.total, self.desc, self.seconds = total, desc, seconds
        self.done = self.shown = 0
        self.note = ""
        self.step = max(1, total // 10)
        self.at = time.monotonic()
        self.bar: Any = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, file=sys.stderr, leave=False)
        else:
            print(f"{desc}: 0 of {total}", file=sys.stderr, flush=True)

    def update(self, n: int = 1, note: str | None = None) -> None:
        """`n` more units done; `note` (e.g. a running loss) is shown beside the count from now on."""
        self.done += n
        if note is not None:
            self.note = note
        if self.bar is not None:
            self.bar.update(n)
            if note is not None:
                self.bar.set_postfix_str(note)
        elif (
            self.done - self.shown >= self.step or self.done >= self.total or time.monotonic() - self.at >= self.seconds
        ):
            self._show()

    def close(self) -> None:
        """Remove the bar, or log the last count when it was not shown yet."""
        if self.bar is not None:
            self.bar.close()
        elif self.done != self.shown:
            self._show()

    def _show(self) -> None:
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        note = f", {self.note}" if self.note else ""
        print(f"{self.desc}: {self.done} of {self.total}{pct}{note}", file=sys.stderr, flush=True)
        self.shown, self.at = self.done, time.monotonic()


def progress_bar(total: int, desc: str) -> tuple[Progress, Callable[[], None]]:
    """A `ProgressReport` as (update(n), close())."""
    report = ProgressReport(total, desc)
    return report.update, report.close
