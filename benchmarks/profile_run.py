"""Where a `reproduce` run's time went: its `progress.log` summed by stage.

Each progress line starts a step that lasts until the next line; steps are grouped by their message with axis
and category names and numbers blanked (so "test split: age" and "test split: religion" are one stage, and every
trial of every axis is one). Prints the stages by time, with their share of the run, and writes them with
`--json FILE`.

    .venv/bin/python benchmarks/profile_run.py runs/small [--json profile.json]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

from lens_steer.axes import AXIS_NAMES
from lens_steer.data.bbq import BBQ_CATEGORIES

LINE = re.compile(r"^(\S+) \[\s*(\d+)s\] (.*)$")
NAMES = re.compile(r"\b(" + "|".join(map(re.escape, (*AXIS_NAMES, *BBQ_CATEGORIES))) + r")\b")


def stage_of(message: str) -> str:
    """The stage a progress message belongs to: axis/category names -> AXIS, numbers -> N, per-trial details cut."""
    msg = NAMES.sub("AXIS", message)
    msg = re.sub(r"\((complete|pruned|failed).*$|, best so far.*$", "", msg)
    return re.sub(r"(?<![\w.])[-+]?\d+(\.\d+)?\b", "N", msg).strip()


def profile(log: Path) -> tuple[float, list[tuple[str, float, int]]]:
    """Total seconds of the last run in `log` and, per stage, (stage, seconds, steps), longest first."""
    steps: list[tuple[float, str]] = []
    for raw in log.read_text().splitlines():
        m = LINE.match(raw)
        if not m:
            continue
        t, msg = float(m.group(2)), m.group(3)
        if steps and t < steps[-1][0]:  # a later run appended to the same log: keep the last one
            steps = []
        steps.append((t, msg))
    if len(steps) < 2:
        raise SystemExit(
            f"error: {log} holds fewer than two progress lines; run `lens-steer reproduce` with --out on that folder "
            "first"
        )
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for (t0, msg), (t1, _) in zip(steps, steps[1:]):
        acc = totals[stage_of(msg)]
        acc[0] += t1 - t0
        acc[1] += 1
    total = steps[-1][0] - steps[0][0]
    return total, sorted(((k, v[0], int(v[1])) for k, v in totals.items()), key=lambda x: -x[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a reproduce --out folder (or its progress.log)")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    path = Path(args.run)
    log = path / "progress.log" if path.is_dir() else path
    if not log.is_file():
        print(
            f"error: {log} does not exist; give a folder that `lens-steer reproduce --out` wrote (progress.log is "
            "written since this version)",
            file=sys.stderr,
        )
        raise SystemExit(2)
    total, stages = profile(log)
    print(f"{log}: {total:.0f} s from the first progress line to the last")
    print(f"{'stage':<70}{'seconds':>9}{'share':>8}{'steps':>7}")
    for name, sec, n in stages[: args.top]:
        print(f"{name[:69]:<70}{sec:>9.0f}{100 * sec / max(total, 1e-9):>7.1f}%{n:>7}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"total_seconds": total, "stages": [{"stage": k, "seconds": s, "steps": n} for k, s, n in stages]},
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
