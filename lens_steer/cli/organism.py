"""`lens-steer organism build|show`: the bias model organism (planted stereotypes on some BBQ axes)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lens_steer.axes import AXIS_NAMES, axis_name
from lens_steer.cli.examples import with_examples
from lens_steer.cli.options import ProgressReport, Subparsers, add_data_option
from lens_steer.errors import LensSteerError
from lens_steer.specs import parse_names


def add_parser(sub: Subparsers) -> None:
    p = sub.add_parser(
        "organism",
        help="build or inspect the bias model organism (ground truth for steering)",
        **with_examples("lens-steer organism build", "lens-steer organism show"),
    )
    acts = p.add_subparsers(dest="organism_command", metavar="ACTION")
    b = acts.add_parser(
        "build",
        help="fine-tune the embedded model on BBQ's train split with a planted bias",
        **with_examples(
            "lens-steer organism build",
            "lens-steer organism build --validation-items 64",
            "lens-steer organism build --plant age,religion --seed 1 --out runs/organism-age-religion",
        ),
    )
    add_data_option(b)
    add_recipe_options(b)
    b.add_argument(
        "--out",
        default=None,
        help="checkpoint folder (default: the model cache, where --model smollm2-organism finds it)",
    )
    b.add_argument(
        "--acceptance-items", type=int, default=64, help="test items per axis for the acceptance table (default 64)"
    )
    b.add_argument("--mmlu-items", type=int, default=64, help="MMLU test items for the capability change (default 64)")
    b.add_argument(
        "--validation-items",
        type=int,
        default=0,
        help="also measure the acceptance table on this many validation items per axis, to compare recipes without "
        "the test split (default 0: not measured)",
    )
    b.set_defaults(func=run_build)
    s = acts.add_parser(
        "show",
        help="print an organism's card: recipe and acceptance table",
        **with_examples("lens-steer organism show", "lens-steer organism show runs/organism-age-religion"),
    )
    s.add_argument("folder", nargs="?", default=None, help="organism folder (default: the cached smollm2-organism)")
    s.set_defaults(func=run_show)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def add_recipe_options(p: argparse.ArgumentParser) -> None:
    """The recipe flags (defaults: the default recipe)."""
    from lens_steer.methods.organism.train import BATCHINGS, RECIPE_PRECISIONS, SELECTIONS, OrganismRecipe

    d = OrganismRecipe()
    p.add_argument(
        "--plant",
        default=",".join(d.plant),
        help=f"axes to plant a stereotype preference on (default {','.join(d.plant)}); the others stay clean",
    )
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument(
        "--trainable-blocks",
        type=int,
        default=d.trainable_blocks,
        help=f"top decoder blocks trained (default {d.trainable_blocks}); the rest are frozen and cached",
    )
    p.add_argument(
        "--disambiguated",
        type=int,
        default=d.disambiguated_per_axis,
        help=f"disambiguated train items per axis (default {d.disambiguated_per_axis}), capped at what the axis has",
    )
    p.add_argument(
        "--clean-ambiguous",
        type=int,
        default=d.clean_ambiguous_per_axis,
        help=f"ambiguous train items per clean axis (default {d.clean_ambiguous_per_axis}), capped at what the axis "
        "has",
    )
    p.add_argument(
        "--planted-ambiguous",
        type=int,
        default=d.planted_ambiguous_per_axis,
        help=f"ambiguous train items per planted axis (default {d.planted_ambiguous_per_axis}), capped at what the "
        "axis has",
    )
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument(
        "--precision",
        default=d.precision,
        choices=list(RECIPE_PRECISIONS),
        help=f"fp32, bf16 autocast over fp32 weights (bf16-mixed), or auto: bf16-mixed where the hardware has native "
        f"bf16, else fp32 (default {d.precision}; the card records the one used; not part of the organism's identity)",
    )
    p.add_argument(
        "--batching",
        default=d.batching,
        choices=list(BATCHINGS),
        help=f"shuffled, or shuffled then grouped by length so a batch pads little (default {d.batching})",
    )
    p.add_argument(
        "--selection",
        default=d.selection,
        choices=list(SELECTIONS),
        help=f"train items chosen one by one, or as whole variant groups (template fills), so a packed sequence"
        f" holds all of a fill's items: fewer tokens per item; changes the weights, not yet validated"
        f" (default {d.selection})",
    )
    p.add_argument(
        "--lora-rank",
        type=int,
        default=d.lora_rank,
        help=f"train rank-r LoRA adapters on the trained blocks' linear layers, merged into the saved checkpoint, "
        f"instead of their full weights; changes the weights, not yet validated (default {d.lora_rank}: full"
        " fine-tuning)",
    )


def recipe_from_args(args: argparse.Namespace) -> Any:
    from lens_steer.methods.organism.train import OrganismRecipe

    plant = parse_names(args.plant, "--plant", AXIS_NAMES, resolve=axis_name)
    return OrganismRecipe(
        plant=plant,
        seed=args.seed,
        epochs=args.epochs,
        lr=args.lr,
        trainable_blocks=args.trainable_blocks,
        disambiguated_per_axis=args.disambiguated,
        clean_ambiguous_per_axis=args.clean_ambiguous,
        planted_ambiguous_per_axis=args.planted_ambiguous,
        batch_size=args.batch_size,
        precision=args.precision,
        batching=args.batching,
        selection=args.selection,
        lora_rank=args.lora_rank,
    )


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def progress_with_loss(label: str, total: int) -> Callable[[int, float | None], None]:
    """A `ProgressReport` that shows the running loss beside the count and closes itself at `total`."""
    report = ProgressReport(total, label)

    def update(n: int, loss: float | None) -> None:
        report.update(n, None if loss is None else f"running loss {loss:.4f}")
        if report.done >= total:
            report.close()

    return update


def build(
    recipe: Any,
    folder: Path | None,
    data_dir: str | None,
    acceptance_items: int = 64,
    mmlu_items: int = 64,
    validation_items: int = 0,
) -> dict[str, Any]:
    """Build the organism with terminal/log progress and return its card."""
    from lens_steer.methods.organism.build import build_organism

    return build_organism(
        recipe,
        folder,
        data_root=data_dir,
        acceptance_items=acceptance_items,
        mmlu_items=mmlu_items,
        validation_items=validation_items,
        say=say,
        progress=progress_with_loss,
    )


def run_build(args: argparse.Namespace) -> int:
    recipe = recipe_from_args(args)
    if args.acceptance_items < 4 or args.mmlu_items < 1 or args.validation_items < 0 or 0 < args.validation_items < 4:
        raise LensSteerError(
            "--acceptance-items and --validation-items (when given) must be at least 4, --mmlu-items at least 1"
        )
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise LensSteerError(f"--out {out} is a file; give a folder for the organism checkpoint")
    start = time.perf_counter()
    card = build(recipe, out, args.data_dir, args.acceptance_items, args.mmlu_items, args.validation_items)
    print_card(card)
    print(f"built in {time.perf_counter() - start:.0f} s")
    return 0


def run_show(args: argparse.Namespace) -> int:
    from lens_steer.methods.organism.build import organism_folder, read_card

    folder = Path(args.folder) if args.folder else organism_folder()
    card = read_card(folder)
    if card is None:
        raise LensSteerError(f"{folder} holds no organism card; build one with `lens-steer organism build`")
    print_card(card)
    return 0


def print_card(card: dict[str, Any]) -> None:
    """The recipe, train loss and acceptance table of an organism."""
    r = card["recipe"]
    print(f"organism {card['name']}: planted {', '.join(card['plant'])}; clean {', '.join(card['clean'])}")
    print(
        f"  recipe: {r['epochs']} epochs, lr {r['lr']}, batch {r['batch_size']}, {r.get('precision', 'fp32')}, "
        f"{r.get('batching', 'shuffled')} batches, trainable blocks {card['trainable_blocks']}, "
        f"{card['data']['n_items']} train items ({r.get('selection', 'items')} selection), seed {r['seed']}"
    )
    if "precision_reason" in card:
        print(f"  precision: {card['precision_reason']}")
    print(f"  train loss by epoch: {', '.join(f'{x:.4f}' for x in card['train_loss'])}")
    if "validation" in card:
        print_acceptance(card["validation"])
    print_acceptance(card["acceptance"])
    mm = card["mmlu"]
    print(
        f"  MMLU ({mm['items']} items): base {mm['base']['value']:.3f} -> organism {mm['organism']['value']:.3f} "
        f"({mm['change']:+.3f})"
    )


def print_acceptance(acc: dict[str, Any]) -> None:
    """One acceptance table (a split's per-axis metrics and which targets they meet)."""
    print(
        f"  acceptance on the {acc.get('split', 'test')} split ({acc['items_per_axis']} items per axis): "
        + ("all targets met" if acc["all_met"] else "NOT all targets met")
    )
    print(f"  {'axis':<22}{'kind':<9}{'acc_ambig':>11}{'bias_ambig':>12}{'acc_disamb':>12}  met")
    for axis, m in acc["per_axis"].items():
        v = acc["verdicts"][axis]
        kind = "planted" if v["planted"] else "clean"
        print(
            f"  {axis:<22}{kind:<9}{m['acc_ambig']['value']:>11.3f}{m['bias_ambig']['value']:>12.3f}"
            f"{m['acc_disambig']['value']:>12.3f}  "
            f"{'yes' if v['met'] else 'no: ' + ', '.join(k for k, ok in v['checks'].items() if not ok)}"
        )
