"""One call from a model to a benchmark result (`lens_steer.evaluate` at the top level): the bench's items picked
(BBQ through the one selector, `lens_steer.data.select`), the steering asked for applied, the bench's task run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lens_steer.axes import AXIS_NAMES
from lens_steer.data.crows import load_crows
from lens_steer.data.mmlu import load_mmlu
from lens_steer.data.select import limit_bbq, limit_items, select
from lens_steer.data.stereoset import load_stereoset
from lens_steer.errors import LensSteerError
from lens_steer.forward.questions import DEFAULT_SCORING
from lens_steer.forward.scoring import maybe_steer
from lens_steer.model.load import HookedModel
from lens_steer.progress import Progress
from lens_steer.steering.interventions import Intervention
from lens_steer.steering.vectors import SteeringVector
from lens_steer.tasks.bbq import run_bbq
from lens_steer.tasks.crows import run_crows
from lens_steer.tasks.mmlu import run_mmlu
from lens_steer.tasks.result import BENCHES, BenchResult
from lens_steer.tasks.stereoset import run_stereoset

DEFAULT_COEFF = 1.0  # the coefficient of a vector that stores none: the vector as it is


def steering_coeff(vector: SteeringVector | None, coeff: float | None) -> float:
    """The coefficient to apply `vector` at: `coeff` when given, else the vector's stored one (an ISV's), else
    DEFAULT_COEFF; 0 without a vector (a coefficient without one is an error)."""
    if vector is None:
        if coeff is not None:
            raise LensSteerError("a coefficient scales a steering vector; pass vector= too, or leave coeff out")
        return 0.0
    if coeff is not None:
        return float(coeff)
    return vector.coeff if vector.coeff is not None else DEFAULT_COEFF


def bench_items(
    bench: str,
    categories: str | Sequence[str] | None = None,
    *,
    split: str = "test",
    limit: int | None = None,
    seed: int = 0,
    split_seed: int = 0,
    source: str = "official",
    data_root: str | Path | None = None,
) -> list[Any]:
    """The items `evaluate` scores: BBQ's `split` of each axis or category (default the nine axes) cut by
    `split_seed`, MMLU's `split` ("test" or "dev") of the subjects, CrowS-Pairs or StereoSet rows of the bias
    types (these have no splits); at most `limit` (BBQ: whole variant groups), chosen by `seed`."""
    if bench not in BENCHES:
        raise LensSteerError(f"unknown bench {bench!r}; use one of {', '.join(BENCHES)}")
    cats = [categories] if isinstance(categories, str) else (list(categories) if categories is not None else None)
    if bench == "bbq":
        items = [
            it
            for target in cats or AXIS_NAMES
            for it in select(target, split, source=source, split_seed=split_seed, data_root=data_root)
        ]
        return limit_bbq(items, limit, seed)
    if bench == "mmlu":
        return limit_items(load_mmlu(split, subjects=cats, data_root=data_root), limit, seed)
    if split != "test":
        raise LensSteerError(f"{bench} has no splits; leave split at its default")
    rows = load_crows(cats, data_root=data_root) if bench == "crows" else load_stereoset(cats, data_root=data_root)
    return limit_items(rows, limit, seed)


def evaluate(
    model: HookedModel,
    bench: str = "bbq",
    *,
    categories: str | Sequence[str] | None = None,
    split: str = "test",
    limit: int | None = None,
    vector: SteeringVector | None = None,
    coeff: float | None = None,
    intervention: Intervention | None = None,
    scoring: str = DEFAULT_SCORING,
    prompt_format: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    split_seed: int = 0,
    source: str = "official",
    data_root: str | Path | None = None,
    max_batch: int = 16,
    progress: Progress | None = None,
) -> BenchResult:
    """Score `bench` ("bbq", "mmlu", "crows", "stereoset") on the items `bench_items` picks, steered by
    `coeff * vector` (coeff default: the vector's stored coefficient, else 1) or by `intervention`, with
    bootstrap intervals; `scoring` and `prompt_format` (default: "reference" for BBQ, "lm_eval" for MMLU)
    apply to BBQ and MMLU. The items and metrics equal `lens-steer eval`'s for the same options."""
    if intervention is not None and vector is not None:
        raise LensSteerError("pass either an intervention or a vector with a coefficient, not both")
    items = bench_items(
        bench,
        categories,
        split=split,
        limit=limit,
        seed=seed,
        split_seed=split_seed,
        source=source,
        data_root=data_root,
    )
    c = steering_coeff(vector, coeff)
    steering: dict[str, Any] = {"vector": vector, "coeff": c, "intervention": intervention}
    common: dict[str, Any] = {"n_boot": n_boot, "seed": seed, "max_batch": max_batch, "progress": progress}
    if bench == "bbq":
        fmt = prompt_format or "reference"
        return run_bbq(model, items, scoring=scoring, prompt_format=fmt, **steering, **common)
    if bench == "mmlu":
        fmt = prompt_format or "lm_eval"
        return run_mmlu(model, items, scoring=scoring, prompt_format=fmt, **steering, **common)
    with maybe_steer(model, intervention=intervention):  # these tasks take a vector, not an intervention
        if bench == "crows":
            return run_crows(model, items, vector=vector, coeff=c, **common)
        return run_stereoset(model, items, vector=vector, coeff=c, **common)


__all__ = ["DEFAULT_COEFF", "bench_items", "evaluate", "steering_coeff"]
