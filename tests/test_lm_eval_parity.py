"""Parity with lm-evaluation-harness's own BBQ task: lm-eval's code (its task YAML and `utils.py`, its HFLM
model) scores the same official rows as `run_bbq(prompt_format="lm_eval")`; answers and log-likelihoods
must agree. Needs the `parity` extra (`pip install '.[parity]'`); skipped with the reason where absent."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from _tiny_models import single_thread  # noqa: F401 (autouse fixture: one torch thread)

lm_eval = pytest.importorskip("lm_eval", reason="lm-evaluation-harness is not installed: pip install '.[parity]'")
import lm_eval.tasks  # noqa: E402

from lens_steer.data.bbq import load_bbq_file  # noqa: E402
from lens_steer.data.root import resolve_data_root  # noqa: E402
from lens_steer.model.load import EMBEDDED_MODEL, checkpoint_folder, load_model  # noqa: E402
from lens_steer.tasks.bbq import run_bbq  # noqa: E402
from lens_steer.tasks.lm_eval_bbq import shipped_yaml, task_yaml, write_task  # noqa: E402

N_ITEMS = 40
TASK_NAME = "bbq_lens_steer_parity"


def _rows(data_root: Path) -> list[dict[str, Any]]:
    """20 Age and 20 Religion rows spread over each file (every 37th line), as raw JSON objects."""
    out = []
    for cat in ("Age", "Religion"):
        lines = (data_root / "bbq" / "data" / f"{cat}.jsonl").read_text().splitlines()
        out += [json.loads(x) for x in lines[::37][: N_ITEMS // 2]]
    return out


def _lm_eval_samples(folder: Path, rows: list[dict[str, Any]], tmp: Path) -> list[dict[str, Any]]:
    """lm-eval's per-document samples for `rows`, run by lm-eval's own code on the HF checkpoint in `folder`."""
    from lm_eval.models.huggingface import HFLM

    manager = write_task(rows, tmp, TASK_NAME)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lm = HFLM(pretrained=str(folder), device="cpu", batch_size=8, dtype="float32")
        out = lm_eval.simple_evaluate(
            model=lm, tasks=[TASK_NAME], task_manager=manager, log_samples=True, bootstrap_iters=0
        )
    return sorted(out["samples"][TASK_NAME], key=lambda s: s["doc_id"])


def _compare(model_name: str, folder: Path, tmp: Path) -> None:
    data_root = resolve_data_root(None)
    rows = _rows(data_root)
    samples = _lm_eval_samples(folder, rows, tmp)
    assert len(samples) == len(rows)
    items = []
    for r in rows:
        path = data_root / "bbq" / "data" / f"{r['category']}.jsonl"
        items.append(next(it for it in load_bbq_file(path, source="official") if it.example_id == r["example_id"]))
    model = load_model(model_name)
    result = run_bbq(model, items, prompt_format="lm_eval", n_boot=0)
    same, worst = 0, 0.0
    for rec, sample in zip(result.records, samples):
        theirs = [float(resp[0]) for resp in sample["filtered_resps"]]
        assert [" " + o for o in rec["options"]] == [arg[1] for arg in sample["arguments"]]  # same choices, same order
        worst = max(worst, max(abs(a - b) for a, b in zip(rec["option_logliks"], theirs)))
        their_choice = max(range(len(theirs)), key=lambda i: (theirs[i], -i))
        same += rec["pred"] == rec["option_answer"][their_choice]
    assert same / len(rows) >= 0.99, f"{same}/{len(rows)} answers agree with lm-eval"
    assert worst < 1e-3, f"largest log-likelihood difference {worst}"


def test_tiny_model_matches_lm_eval(tmp_path: Path) -> None:
    from _tiny_models import tiny_llama_folder

    folder = tiny_llama_folder(tmp_path / "tiny")
    _compare(str(folder), folder, tmp_path)


@pytest.mark.integration
def test_embedded_model_matches_lm_eval(tmp_path: Path) -> None:
    _compare(EMBEDDED_MODEL, checkpoint_folder(EMBEDDED_MODEL), tmp_path)


def test_task_yaml_changes_only_name_and_data(tmp_path: Path) -> None:
    shipped = set(shipped_yaml().read_text().splitlines())
    ours = set(task_yaml(TASK_NAME, tmp_path / "rows.jsonl").splitlines())
    assert {x.split(":")[0].strip() for x in shipped - ours} <= {
        "task",
        "dataset_path",
        "dataset_name",
        "tag",
        "- social_bias",
    }
    assert "doc_to_choice: !function utils.doc_to_choice" in ours and "output_type: multiple_choice" in ours
