"""The "Examples:" part every subcommand's --help ends with: `add_parser(..., **with_examples(...))`."""

from __future__ import annotations

import argparse
from typing import Any

EXAMPLES_HEADING = "Examples:"


class ExamplesHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help text wrapped to the terminal as usual, except text with line breaks (the examples), kept as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return super()._fill_text(text, width, indent)
        return argparse.HelpFormatter._fill_text(self, text, width, indent)


def with_examples(*lines: str) -> dict[str, Any]:
    """`add_parser` keywords giving the parser an epilog of example command lines (each `lens-steer <command> ...`)."""
    return {
        "epilog": EXAMPLES_HEADING + "\n" + "\n".join(f"  {line}" for line in lines),
        "formatter_class": ExamplesHelpFormatter,
    }


def example_lines(parser: argparse.ArgumentParser) -> list[str]:
    """The example command lines of a parser's epilog (empty when it has none)."""
    epilog = parser.epilog or ""
    if EXAMPLES_HEADING not in epilog:
        return []
    return [line.strip() for line in epilog.split(EXAMPLES_HEADING, 1)[1].splitlines() if line.strip()]
