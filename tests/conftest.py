"""Suite-wide rules: in CI (env CI=true) a test skipped because data, weights or a doc are missing fails.

A skip whose reason starts with one of `MISSING_PREFIXES` ("missing data: ...", "missing weights: ...",
"missing doc: ...", "missing browser: ...") says a prerequisite of the project is absent. Locally that is a skip;
in CI it is a failure, so a CI run that lost its data cannot pass by skipping. Other skips (an optional backend, a
server that cannot be started on this machine) stay skips everywhere.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

MISSING_PREFIXES: tuple[str, ...] = ("missing data:", "missing weights:", "missing doc:", "missing browser:")


def in_ci() -> bool:
    """True when the environment variable CI is set to a true value (true, 1, yes)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def skip_reason(report: Any) -> str | None:
    """The reason of a skipped test or collection report, else None."""
    if not report.skipped:
        return None
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
    else:
        reason = str(longrepr)
    return reason.removeprefix("Skipped: ")


def is_missing_prerequisite(reason: str | None) -> bool:
    """Whether a skip reason names missing data, weights, a doc or the browser."""
    return reason is not None and reason.strip().lower().startswith(MISSING_PREFIXES)


def _fail_in_ci(report: Any) -> None:
    reason = skip_reason(report)
    if in_ci() and is_missing_prerequisite(reason):
        report.outcome = "failed"
        report.longrepr = f"CI=true: a missing prerequisite is a failure, not a skip ({reason})"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Any:
    """Turn a missing-prerequisite skip of a test (skipif mark or pytest.skip) into a failure in CI."""
    outcome = yield
    _fail_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Any:
    """The same for a whole module skipped at collection (pytest.skip(..., allow_module_level=True))."""
    outcome = yield
    _fail_in_ci(outcome.get_result())
