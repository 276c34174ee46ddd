"""Checks the tests share: a library error, or a command's failure, is one line that names what it should."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from lens_steer.cli import main
from lens_steer.errors import LensSteerError


def assert_one_line_error(fn: Callable[[], Any], *needles: str, error: type[Exception] = LensSteerError) -> str:
    """`fn()` raises `error` with a one-line message holding every needle; the message."""
    with pytest.raises(error) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def assert_cli_fails(capsys: pytest.CaptureFixture[str], argv: list[str], *needles: str) -> str:
    """`lens-steer argv` exits 2 with one `error: ...` line on stderr holding every needle; the line."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for needle in needles:
        assert needle in err, err
    return err
