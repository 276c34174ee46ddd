"""Whether two `reproduce` runs got the same results: their `results.json` compared value by value (timings and
run-folder paths left out) and their per-item predictions evaluation by evaluation.

    .venv/bin/python benchmarks/diff_runs.py runs/small-before runs/small-after [--json diff.json]

Prints how many values are equal, the numbers that differ grouped by their key (largest difference first),
whether every differing number is a log-probability margin or a statistic built on margins (steerability,
margin shifts, sweep slopes: sums of the same log-probabilities in another order differ in the last digits),
and how many evaluations picked the same answer on every item. Evaluations are matched by what they evaluated
(model, vector, coefficient, items, scoring), not by file name.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

TIMINGS = ("seconds", "stage_seconds")
MARGIN_KEYS = ("margin", "steerability", "slopes", "shift")
UNMATCHED_FIELDS = ("file", "sha256", "scoring_version")


def results_without_timings(run: Path) -> Any:
    """`run/results.json` without its timings, with the run folder's path written as RUN."""
    results = json.loads((run / "results.json").read_text())
    for key in TIMINGS:
        results["meta"].pop(key, None)
    text = json.dumps(results).replace(str(run.resolve()), "RUN").replace(str(run), "RUN")
    return json.loads(text)


def compare(a: Any, b: Any, path: str = "") -> tuple[int, list[tuple[str, float, Any, Any]], list[str]]:
    """(equal leaves, numbers that differ as (path, |a - b|, a, b), other differences) between two JSON values."""
    if isinstance(a, dict) and isinstance(b, dict):
        equal, numbers, other = 0, [], []
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                other.append(f"{path}/{key} only in {'the first' if key in a else 'the second'} run")
                continue
            e, n, o = compare(a[key], b[key], f"{path}/{key}")
            equal, numbers, other = equal + e, numbers + n, other + o
        return equal, numbers, other
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return 0, [], [f"{path}: {len(a)} vs {len(b)} entries"]
        parts = [compare(x, y, f"{path}[{i}]") for i, (x, y) in enumerate(zip(a, b))]
        return sum(p[0] for p in parts), [n for p in parts for n in p[1]], [o for p in parts for o in p[2]]
    if a == b:
        return 1, [], []
    if (
        isinstance(a, (int, float))
        and isinstance(b, (int, float))
        and not isinstance(a, bool)
        and not isinstance(b, bool)
    ):
        return 0, [(path, abs(a - b), a, b)], []
    return 0, [], [f"{path}: {str(a)[:60]} vs {str(b)[:60]}"]


def group_key(path: str) -> str:
    """The key a differing number is grouped under: its last path part, or the last two for value/ci_low/ci_high."""
    parts = path.split("/")
    return "/".join(parts[-2:]) if parts[-1].startswith(("value", "ci_")) else parts[-1]


def predictions(run: Path) -> dict[str, list[Any]]:
    """`{what was evaluated: [the predicted answer per item]}` from `run/predictions/`."""
    index = json.loads((run / "predictions" / "index.json").read_text())
    out = {}
    for entry in index.values():
        rows = [
            json.loads(line) for line in (run / "predictions" / entry["file"]).read_text().splitlines() if line.strip()
        ]
        out[json.dumps({k: v for k, v in entry.items() if k not in UNMATCHED_FIELDS}, sort_keys=True)] = [
            r.get("pred") for r in rows
        ]
    return out


def main() -> int:
    """Compare the two runs named on the command line; exit 1 if a prediction or a non-margin number differs."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("first", type=Path)
    ap.add_argument("second", type=Path)
    ap.add_argument("--json", default=None, help="write the counts and every differing number to this file")
    args = ap.parse_args()
    for run in (args.first, args.second):
        if not (run / "results.json").is_file() or not (run / "predictions" / "index.json").is_file():
            raise SystemExit(
                f"error: {run} holds no finished run (results.json and predictions/index.json); give a "
                "`lens-steer reproduce --out` folder"
            )
    equal, numbers, other = compare(results_without_timings(args.first), results_without_timings(args.second))
    print(f"results.json: {equal} values equal, {len(numbers)} numbers differ, {len(other)} other differences")
    groups: dict[str, list[tuple[str, float, Any, Any]]] = defaultdict(list)
    for n in numbers:
        groups[group_key(n[0])].append(n)
    for key, items in sorted(groups.items(), key=lambda kv: -max(n[1] for n in kv[1])):
        path, diff, a, b = max(items, key=lambda n: n[1])
        print(f"  {key}: {len(items)} differ, largest {diff:.3g} at {path} ({a} vs {b})")
    for line in other[:30]:
        print(f"  {line}")
    not_margins = [n for n in numbers if not any(k in n[0] for k in MARGIN_KEYS)]
    print(f"differing numbers that are not log-probability margins or built on them: {len(not_margins)}")
    first, second = predictions(args.first), predictions(args.second)
    matched = [k for k in first if k in second]
    same = [k for k in matched if first[k] == second[k]]
    items = sum(len(first[k]) for k in same)
    print(
        f"predictions: {len(same)} of {len(matched)} matched evaluations identical ({items} items); "
        f"{len(first) - len(matched)} only in the first run, {len(second) - len(matched)} only in the second"
    )
    if args.json:
        figures = {
            "equal": equal,
            "numbers_differ": len(numbers),
            "other_differences": other,
            "not_margins": len(not_margins),
            "evaluations_matched": len(matched),
            "evaluations_identical": len(same),
            "items_identical": items,
            "numbers": [{"path": p, "abs_diff": d, "first": a, "second": b} for p, d, a, b in numbers],
        }
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0 if not not_margins and not other and len(same) == len(matched) == len(first) == len(second) else 1


if __name__ == "__main__":
    raise SystemExit(main())
