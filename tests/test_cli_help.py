"""Every subcommand's --help ends with an "Examples:" part whose lines are `lens-steer <that subcommand> ...` command
lines that its own parser accepts as written."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Iterator

import pytest

from lens_steer.cli import build_parser
from lens_steer.cli.examples import EXAMPLES_HEADING, example_lines


def subcommand_parsers(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """(command path, parser) of every subcommand at any depth (`organism build` is ("organism", "build"))."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from subcommand_parsers(sub, (*path, name))


PARSERS = dict(subcommand_parsers(build_parser()))


def test_the_walk_finds_every_subcommand() -> None:
    names = {" ".join(p) for p in PARSERS}
    assert {"eval", "extract", "generate", "sweep", "search", "export", "organism", "organism build"} <= names
    assert len(PARSERS) == 15  # 13 subcommands, and organism's build and show


@pytest.mark.parametrize("path", sorted(PARSERS), ids=" ".join)
def test_help_ends_with_runnable_examples(path: tuple[str, ...]) -> None:
    parser = PARSERS[path]
    text = parser.format_help()
    assert f"\n{EXAMPLES_HEADING}\n" in text
    lines = example_lines(parser)
    assert 1 <= len(lines) <= 3
    command = "lens-steer " + " ".join(path)
    for line in lines:
        assert line == command or line.startswith(command + " "), line
        assert f"  {line}\n" in text + "\n"  # printed as written, not re-wrapped
        words = shlex.split(line)[1 + len(path) :]
        args = parser.parse_args(words)  # every option and value of the example exists
        assert callable(getattr(args, "func", None))


def test_descriptions_are_still_wrapped_to_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    text = PARSERS[("search",)].format_help()
    description = text.split("\n\n")[1]  # after the usage block
    assert "TPE search" in description and max(len(line) for line in description.splitlines()) <= 80
