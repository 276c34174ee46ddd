"""How the test stage tunes (validation) and judges (test): `EnsembleConfig`, as data (JSON round trip)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from lens_steer.data.bbq import LOAD_SOURCES
from lens_steer.errors import StudyError
from lens_steer.extract.activations import AGGREGATORS
from lens_steer.forward.questions import DEFAULT_SCORING, PROMPT_FORMATS, SCORINGS
from lens_steer.methods.baselines.prompting import BASELINES
from lens_steer.methods.ensemble import ENSEMBLE_KINDS

SPLIT_SOURCES: tuple[str, ...] = ("ours", "v2")


# ============================================================================ configuration
@dataclasses.dataclass(frozen=True)
class EnsembleConfig:
    """How ensembles are tuned (validation) and judged (test); JSON round-trip via dataclasses.asdict."""

    coeffs: tuple[float, ...] = tuple(float(c) for c in range(-5, 6))
    kinds: tuple[str, ...] = ENSEMBLE_KINDS
    val_limit: int | None = 100
    test_limit: int | None = 300
    scoring: str = DEFAULT_SCORING
    prompt_format: str = "reference"
    split_seed: int = 0
    seed: int = 0
    n_boot: int = 1000
    control_seeds: tuple[int, ...] = (1, 2, 3)
    mmlu_items: int = 200
    ood: bool = True
    ood_source: str = "mixed"
    generated_dir: str | None = None  # generated BBQ files, for a `bbq_source` or `ood_source` that reads them
    bbq_source: str = "official"  # where the axes' validation and test items come from: the search's own source
    merged_method: str = "pca_diff"
    max_batch: int = 16
    store_dir: str | None = (
        None  # keep every evaluation's predictions there (lens_steer.tasks.store); re-runs read them back
    )
    baselines: tuple[
        str, ...
    ] = ()  # debiasing baselines judged beside the vectors (lens_steer.methods.baselines.prompting.BASELINES)
    finetune_items: int | None = 48  # train items per axis the finetune baseline's LoRA learns from (None: all)
    kind_entries: bool = False  # also judge each intervention kind's best trial per axis (the class x axis table)
    splits: str = (
        "ours"  # validation and test items of the axes: ours (seeded splits) or v2 (the later paper's exact files)
    )

    def __post_init__(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise StudyError(f"ensemble config: {msg}")

        need(
            len(self.coeffs) > 0 and all(math.isfinite(c) for c in self.coeffs),
            f"coeffs must be a non-empty list of numbers, got {list(self.coeffs)}",
        )
        need(
            len(self.kinds) > 0 and all(k in ENSEMBLE_KINDS for k in self.kinds),
            f"kinds must be drawn from {', '.join(ENSEMBLE_KINDS)}, got {list(self.kinds)}",
        )
        need(self.scoring in SCORINGS, f"unknown scoring {self.scoring!r}; use one of {', '.join(SCORINGS)}")
        need(
            self.prompt_format in PROMPT_FORMATS,
            f"unknown prompt_format {self.prompt_format!r}; use one of {', '.join(PROMPT_FORMATS)}",
        )
        need(
            self.bbq_source in LOAD_SOURCES,
            f"unknown bbq_source {self.bbq_source!r}; use one of {', '.join(LOAD_SOURCES)}",
        )
        need(
            self.merged_method in AGGREGATORS,
            f"unknown merged_method {self.merged_method!r}; use one of {', '.join(AGGREGATORS)}",
        )
        need(
            all(b in BASELINES for b in self.baselines),
            f"baselines must be drawn from {', '.join(BASELINES)}, got {list(self.baselines)}",
        )
        need(self.splits in SPLIT_SOURCES, f"unknown splits {self.splits!r}; use one of {', '.join(SPLIT_SOURCES)}")
        for name in ("val_limit", "test_limit"):
            v = getattr(self, name)
            need(v is None or (isinstance(v, int) and v >= 1), f"{name} must be a positive integer or null, got {v!r}")
        need(
            isinstance(self.mmlu_items, int) and self.mmlu_items >= 0,
            f"mmlu_items must be >= 0 (0 skips MMLU), got {self.mmlu_items!r}",
        )
        need(isinstance(self.n_boot, int) and self.n_boot >= 0, f"n_boot must be >= 0, got {self.n_boot!r}")
        object.__setattr__(self, "coeffs", tuple(float(c) for c in self.coeffs))
        object.__setattr__(self, "kinds", tuple(self.kinds))
        object.__setattr__(self, "baselines", tuple(dict.fromkeys(self.baselines)))
        object.__setattr__(self, "control_seeds", tuple(int(s) for s in self.control_seeds))

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}
