"""How long work reports its progress: the library takes a `Progress` callback (called with the number of units
just finished) and never prints; the command line turns it into a bar or log lines (lens_steer.cli.options)."""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int], None]  # called with how many more units (items, texts, pairs, steps) are done

__all__ = ["Progress"]
