"""`lens-steer search`: an Optuna study for one axis's individually optimised steering vector (ISV)."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from lens_steer.cli.examples import with_examples
from lens_steer.cli.loading import load_model_from_args
from lens_steer.cli.options import add_data_option, add_model_option, check_at_least, check_out_folder
from lens_steer.errors import LensSteerError


def add_parser(subparsers: Any) -> None:
    """Register the `search` subcommand."""
    from lens_steer.forward.questions import SCORINGS
    from lens_steer.methods.search.space import OBJECTIVES

    p = subparsers.add_parser(
        "search",
        **with_examples(
            "lens-steer search --axis age --trials 8 --limit 32 --out runs/age",
            "lens-steer search --axis age --trials 50 --storage sqlite:///runs/optuna.db --resume --out runs/age",
        ),
        help="search an axis's steering vector with Optuna (resumable, several workers)",
        description="TPE search over corpus, prompt count, persona pair, system template, layer(s), method and "
        "coefficient, judged on the axis's BBQ validation split. Writes isv.safetensors, study.json, config.json "
        "and HTML figures into --out. Run the same command in several processes (same --storage and --study) "
        "to add workers.",
    )
    add_model_option(p)
    add_data_option(p)
    p.add_argument("--axis", required=True, help="bias axis (e.g. age, gender_identity, race_ethnicity)")
    p.add_argument(
        "--trials",
        type=int,
        default=None,
        help="finished trials the study should hold, over all workers (default 50; with --resume the stored count)",
    )
    p.add_argument(
        "--limit", type=int, default=None, help="validation items per trial (default 200; whole variant groups)"
    )
    p.add_argument(
        "--storage",
        default=None,
        help="Optuna storage: sqlite:///file.db, journal:FILE, postgresql://user:pass@host/db (default: sqlite in "
        "--out)",
    )
    p.add_argument("--study", default=None, help="study name (default isv-<model>-<axis>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an existing study with its stored configuration (error if it does not exist); "
        "options equal to the stored ones are accepted, a different one is refused",
    )
    p.add_argument(
        "--space",
        default=None,
        help="search space JSON file (see docs/search.md); default: the paper's space plus layers and method",
    )
    p.add_argument(
        "--config",
        default=None,
        help="full search config JSON (a config.json of an earlier run); flags below override it",
    )
    p.add_argument("--objective", choices=list(OBJECTIVES), default=None, help="acc (default), bias or ambig_guarded")
    p.add_argument(
        "--scoring", choices=list(SCORINGS), default=None, help="BBQ scoring protocol (default: the toolkit's default)"
    )
    p.add_argument(
        "--mmlu-weight", type=float, default=None, help="penalty weight for MMLU accuracy lost (default 0: off)"
    )
    p.add_argument("--chunk-size", type=int, default=None, help="items scored between pruning checks (default 50)")
    p.add_argument(
        "--seed", type=int, default=None, help="TPE sampler seed (default 0); the items stay those of --data-seed"
    )
    p.add_argument(
        "--data-seed",
        type=int,
        default=None,
        help="which validation (and MMLU) items judge the trials, and their order (default 0)",
    )
    p.add_argument("--cache-dir", default=None, help="keep pair activations on disk here, shared across runs")
    p.add_argument(
        "--heartbeat",
        type=int,
        default=10,
        help="heartbeat interval in seconds (default 10); a trial silent for 2x this is retried",
    )
    p.add_argument("--out", required=True, help="run folder")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """(the SearchConfig the options describe, the config fields given explicitly as JSON values).
    With --resume the config is None: the study's stored one is used, and the given fields must equal it."""
    from lens_steer.methods.search.space import SearchConfig, SearchSpace, read_json

    base = SearchConfig()
    given: dict[str, Any] = {}
    if args.config:
        obj = {k: v for k, v in read_json(args.config).items() if k not in ("axis", "study", "storage", "model")}
        base = SearchConfig.from_json(obj, source=args.config)
        given.update({k: v for k, v in base.to_json().items() if k in obj})
    overrides: dict[str, Any] = {}
    if args.space:
        overrides["space"] = SearchSpace.load(args.space)
    for flag, field in (
        ("limit", "limit"),
        ("objective", "objective"),
        ("scoring", "scoring"),
        ("mmlu_weight", "mmlu_weight"),
        ("chunk_size", "chunk_size"),
        ("seed", "seed"),
        ("data_seed", "data_seed"),
    ):
        value = getattr(args, flag)
        if value is not None:
            overrides[field] = value
    config = dataclasses.replace(base, **overrides)
    given.update({k: v for k, v in config.to_json().items() if k in overrides})
    given.pop("n_trials", None)  # --trials may change on resume
    return (None if args.resume else config), given


def run(args: argparse.Namespace) -> int:
    """Run (or join, or resume) the study and print where the ISV went."""
    import optuna

    from lens_steer.axes import get_axis
    from lens_steer.methods.search.run import run_isv_search
    from lens_steer.methods.search.workers import TrialReport

    axis = get_axis(args.axis)
    if args.trials is not None and args.trials < 1:
        raise LensSteerError(f"--trials must be at least 1, got {args.trials}")
    check_at_least(args.heartbeat, 1, "--heartbeat")
    out = check_out_folder(args.out)
    config, given = build_config(args)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    model = load_model_from_args(args)

    def progress(r: TrialReport) -> None:
        value = "—" if r.value is None else f"{r.value:.4f}"
        best = "—" if r.best_value is None else f"{r.best_value:.4f}"
        print(
            f"trial {r.finished} of {r.n_trials} (#{r.trial_number} {r.state.lower()}, {value}, {r.seconds:.1f}s), "
            f"best so far {best}",
            file=sys.stderr,
            flush=True,
        )

    result = run_isv_search(
        model,
        axis,
        config,
        Path(args.out),
        storage=args.storage,
        study_name=args.study,
        resume=args.resume,
        data_root=args.data_dir,
        cache_dir=args.cache_dir,
        heartbeat_interval=args.heartbeat,
        n_trials=args.trials,
        progress=progress,
        given=given,
    )
    base = (result.baseline or {}).get("objective")
    summary = result.summary or {}
    print(
        f"study {result.study_name}: best {result.value:.4f} (baseline {base:.4f}) at trial "
        f"{summary.get('best_trial')} of {result.n_trials}; params {result.params}"
        if base is not None
        else f"study {result.study_name}: best {result.value:.4f}; params {result.params}"
    )
    folder = result.path.parent if result.path is not None else out
    print(f"wrote {result.path} and study.json, figures in {folder}")
    return 0
