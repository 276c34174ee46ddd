"""lens_steer.tasks.registry: one task per bench, each a module of lens_steer.tasks; `lens-steer eval` runs every
bench through it (MMLU and CrowS-Pairs here, their metrics recomputed from the predictions they write)."""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

import pytest

from lens_steer.cli import main
from lens_steer.errors import LensSteerError
from lens_steer.methods.baselines.runs import BASELINE_BENCHES
from lens_steer.tasks.registry import TASKS, get_task
from lens_steer.tasks.result import BENCHES

DATA = Path(os.environ.get("LENS_STEER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_data = pytest.mark.skipif(
    not (DATA / "mmlu").is_dir(), reason=f"missing data: shared data not found at {DATA}; set LENS_STEER_DATA"
)
BASE = ["eval", "--model", "tiny-llama", "--data-dir", str(DATA), "--n-boot", "20"]


def test_each_bench_is_a_task_module_with_its_run() -> None:
    assert tuple(TASKS) == BENCHES == ("bbq", "mmlu", "crows", "stereoset") and set(BASELINE_BENCHES) <= set(BENCHES)
    for name, task in TASKS.items():
        module = importlib.import_module(f"lens_steer.tasks.{name}")
        assert task.name == name and callable(getattr(module, f"run_{name}"))
    # the eval help's defaults: lm-eval's prompt for MMLU, the paper's for the rest
    assert {n: t.default_prompt_format for n, t in TASKS.items()} == {
        "bbq": "reference",
        "mmlu": "lm_eval",
        "crows": "reference",
        "stereoset": "reference",
    }


def test_an_unknown_bench_is_one_line_listing_the_benches() -> None:
    with pytest.raises(LensSteerError) as e:
        get_task("trivia")
    assert "'trivia'" in str(e.value) and all(b in str(e.value) for b in BENCHES) and "\n" not in str(e.value)


def read(out: Path) -> tuple[dict, list[dict]]:
    metrics = json.loads((out / "metrics.json").read_text())
    return metrics, [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]


@needs_data
def test_eval_mmlu_through_the_registry_recomputes_from_its_predictions(tmp_path: Path) -> None:
    out = tmp_path / "mmlu"
    assert main([*BASE, "--bench", "mmlu", "--categories", "anatomy", "--limit", "6", "--out", str(out)]) == 0
    metrics, rows = read(out)
    assert metrics["meta"]["prompt_format"] == "lm_eval" and metrics["meta"]["scoring"] == "cloze"
    assert len(rows) == 6 and {r["subject"] for r in rows} == {"anatomy"}
    assert metrics["micro"]["value"] == pytest.approx(sum(r["pred"] == r["label"] for r in rows) / 6)


@needs_data
def test_eval_crows_through_the_registry_recomputes_from_its_predictions(tmp_path: Path) -> None:
    out = tmp_path / "crows"
    assert main([*BASE, "--bench", "crows", "--categories", "ses,age", "--limit", "6", "--out", str(out)]) == 0
    metrics, rows = read(out)
    assert metrics["meta"]["scoring"] == "sequence_logprob"  # CrowS-Pairs scores sentences, whatever --scoring says
    assert len(rows) == 6 and {r["bias_type"] for r in rows} <= {"socioeconomic", "age"}  # "ses": its CrowS type
    assert metrics["overall"]["value"] == pytest.approx(sum(r["logprob_more"] > r["logprob_less"] for r in rows) / 6)
