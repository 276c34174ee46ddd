"""The benchmarks by name: one `Task` per bench (bbq, mmlu, crows, stereoset) that runs it from one set of
options, so a caller picks a task by name instead of branching on it."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from lens_steer.forward.questions import DEFAULT_SCORING, check_choice
from lens_steer.model.load import HookedModel
from lens_steer.progress import Progress
from lens_steer.steering.vectors import SteeringVector
from lens_steer.tasks.bbq import run_bbq
from lens_steer.tasks.crows import run_crows
from lens_steer.tasks.mmlu import run_mmlu
from lens_steer.tasks.result import BENCHES, BenchResult
from lens_steer.tasks.stereoset import run_stereoset


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How a bench is run: what each task reads of it (a task ignores what does not apply to it, e.g. CrowS-Pairs
    the scoring protocol). `prompt_format` None: the task's default."""

    scoring: str = DEFAULT_SCORING
    prompt_format: str | None = None
    bbq_choices: str | None = None
    bias_variant: str = "lm_eval"
    blank: str = "paper"
    vector: SteeringVector | None = None
    coeff: float = 0.0
    n_boot: int = 1000
    seed: int = 0
    max_batch: int = 16
    progress: Progress | None = None


@dataclasses.dataclass(frozen=True)
class Task:
    """One benchmark: its name, its default prompt format, what it scores with (None: the `scoring` option; else
    its fixed method, e.g. CrowS-Pairs' sentence log-probability), and how it runs."""

    name: str
    default_prompt_format: str
    fixed_scoring: str | None
    runner: Callable[[HookedModel, Sequence[Any], RunOptions, str], BenchResult]

    def run(self, model: HookedModel, items: Sequence[Any], options: RunOptions) -> BenchResult:
        """Run the bench on `items` under `options`."""
        return self.runner(model, items, options, options.prompt_format or self.default_prompt_format)

    def scoring(self, options: RunOptions) -> str:
        """The scoring this task runs with under `options`."""
        return self.fixed_scoring or options.scoring


def _bbq(model: HookedModel, items: Sequence[Any], o: RunOptions, prompt_format: str) -> BenchResult:
    return run_bbq(
        model,
        items,
        scoring=o.scoring,
        prompt_format=prompt_format,
        bbq_choices=o.bbq_choices,
        vector=o.vector,
        coeff=o.coeff,
        bias_variant=o.bias_variant,
        n_boot=o.n_boot,
        seed=o.seed,
        max_batch=o.max_batch,
        progress=o.progress,
    )


def _mmlu(model: HookedModel, items: Sequence[Any], o: RunOptions, prompt_format: str) -> BenchResult:
    return run_mmlu(
        model,
        items,
        scoring=o.scoring,
        prompt_format=prompt_format,
        vector=o.vector,
        coeff=o.coeff,
        n_boot=o.n_boot,
        seed=o.seed,
        max_batch=o.max_batch,
        progress=o.progress,
    )


def _crows(model: HookedModel, items: Sequence[Any], o: RunOptions, prompt_format: str) -> BenchResult:
    return run_crows(
        model,
        items,
        vector=o.vector,
        coeff=o.coeff,
        n_boot=o.n_boot,
        seed=o.seed,
        max_batch=o.max_batch,
        progress=o.progress,
    )


def _stereoset(model: HookedModel, items: Sequence[Any], o: RunOptions, prompt_format: str) -> BenchResult:
    return run_stereoset(
        model,
        items,
        blank=o.blank,
        vector=o.vector,
        coeff=o.coeff,
        n_boot=o.n_boot,
        seed=o.seed,
        max_batch=o.max_batch,
        progress=o.progress,
    )


TASKS: dict[str, Task] = {  # one per name of lens_steer.tasks.result.BENCHES, in its order
    t.name: t
    for t in (
        Task("bbq", "reference", None, _bbq),
        Task("mmlu", "lm_eval", None, _mmlu),
        Task("crows", "reference", "sequence_logprob", _crows),
        Task("stereoset", "reference", None, _stereoset),
    )
}


def get_task(name: str) -> Task:
    """The task called `name`; an unknown name is a one-line error listing the benches."""
    return TASKS[check_choice(name, BENCHES, "bench")]


__all__ = ["TASKS", "RunOptions", "Task", "get_task"]
