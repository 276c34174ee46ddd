"""`lens-steer bbq-generate`: write BBQ categories generated from the official templates; optionally compare."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lens_steer.cli.examples import with_examples
from lens_steer.cli.options import check_out_folder
from lens_steer.data.bbq_compare import compare_with_official
from lens_steer.data.bbq_generate import CATEGORIES, generate_category, random_free_templates
from lens_steer.data.root import resolve_data_root
from lens_steer.errors import DataError
from lens_steer.files import write_jsonl


def add_parser(subparsers: Any) -> None:
    """Register the `bbq-generate` subcommand."""
    p = subparsers.add_parser(
        "bbq-generate",
        **with_examples(
            "lens-steer bbq-generate --category Age --seed 0 --out runs/bbq-generated --compare",
            "lens-steer bbq-generate --category all --seed 0 --out runs/bbq-generated",
        ),
        help="generate BBQ categories from the official templates (all 11, intersectional ones included)",
        description="Generate BBQ items in the official schema from bbq/templates/ under the data root; "
        "--compare checks them against the complete official files where those exist.",
    )
    p.add_argument("--category", required=True, help=f"a category or 'all'; one of: {', '.join(CATEGORIES)}")
    p.add_argument("--seed", type=int, required=True, help="seed for every random choice (same seed, same files)")
    p.add_argument("--out", required=True, help="folder to write <Category>.jsonl into")
    p.add_argument(
        "--data-dir",
        default=None,
        help="data root holding bbq/templates/ (default: $LENS_STEER_DATA or ../shared/data)",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="print the comparison with the complete official file, where there is one",
    )
    p.set_defaults(func=run)


def _categories(name: str) -> list[str]:
    if name == "all":
        return list(CATEGORIES)
    if name not in CATEGORIES:
        raise DataError(f"--category {name!r} is not a BBQ category; choose 'all' or one of {', '.join(CATEGORIES)}")
    return [name]


def _read_official(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{n}: not JSON ({exc.msg}); the official BBQ file is damaged") from None
    return rows


def run(args: argparse.Namespace) -> int:
    """Generate, write, and (with --compare) print the comparisons; 0 when every comparison matches."""
    cats = _categories(args.category)
    root = resolve_data_root(args.data_dir)
    out = check_out_folder(args.out)
    status = 0
    for cat in cats:
        rows = generate_category(cat, seed=args.seed, data_root=root)
        path = write_jsonl(out / f"{cat}.jsonl", rows)
        print(f"{cat}: {len(rows)} rows -> {path}")
        if args.compare:
            official = root / "bbq" / "data" / f"{cat}.jsonl"
            if not official.is_file():
                print(f"  (no complete official file for {cat}; nothing to compare)")
                continue
            report = compare_with_official(
                cat, rows, _read_official(official), random_free=random_free_templates(cat, data_root=root)
            )
            print(report.to_text())
            if not report.ok:
                status = 1
    return status
