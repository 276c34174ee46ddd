"""The prediction store: a second request reads back what the first computed, keyed by everything that matters."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from lens_steer.data.bbq import BbqItem, load_bbq
from lens_steer.errors import LensSteerError
from lens_steer.metrics import BbqPrediction
from lens_steer.evaluate import SCORING_VERSION
from lens_steer.tokens import BOS_POLICY
from lens_steer.store import PredictionStore, content_digest, items_digest, vector_digest
from lens_steer.vectors import SteeringVector, VectorMetadata


@pytest.fixture(scope="module")
def items() -> list[BbqItem]:
    try:
        return load_bbq(["Age"])[:5]
    except LensSteerError as e:
        pytest.skip(f"missing data: shared BBQ data not found: {e}")


def vec(scale: float = 1.0) -> SteeringVector:
    return SteeringVector({1: torch.arange(4.0) * scale}, VectorMetadata(model_name="m", d_model=4))


def predictions(items: list[BbqItem], shift: int) -> list[BbqPrediction]:
    return [BbqPrediction.from_item(it, (k + shift) % 3, (-1.0, -2.0, -3.0)) for k, it in enumerate(items)]


def test_bbq_predictions_are_read_back_not_recomputed(items: list[BbqItem], tmp_path: Path) -> None:
    store = PredictionStore(tmp_path)
    calls: list[int] = []

    def compute(shift: int = 0) -> list[BbqPrediction]:
        calls.append(shift)
        return predictions(items, shift)

    first = store.bbq(items, vec(), 2.0, {"model": "m", "scoring": "cloze"}, compute)
    again = PredictionStore(tmp_path).bbq(items, vec(), 2.0, {"model": "m", "scoring": "cloze"}, lambda: compute(1))
    assert calls == [0] and again == first == predictions(items, 0)
    # a different coefficient, vector, scoring or item list is a different entry
    PredictionStore(tmp_path).bbq(items, vec(), -2.0, {"model": "m", "scoring": "cloze"}, lambda: compute(1))
    PredictionStore(tmp_path).bbq(items, vec(2.0), 2.0, {"model": "m", "scoring": "cloze"}, lambda: compute(2))
    PredictionStore(tmp_path).bbq(items, vec(), 2.0, {"model": "m", "scoring": "letter"}, lambda: compute(3))
    PredictionStore(tmp_path).bbq(items[:4], vec(), 2.0, {"model": "m", "scoring": "cloze"}, lambda: predictions(items, 4)[:4])
    assert calls == [0, 1, 2, 3]
    index = json.loads((tmp_path / "predictions" / "index.json").read_text())
    assert len(index) == 5 and {e["file"] for e in index.values()} == {p.name for p in (tmp_path / "predictions").glob("*.jsonl")}


def test_the_file_name_is_the_hash_of_the_spec(items: list[BbqItem], tmp_path: Path) -> None:
    PredictionStore(tmp_path).bbq(items, None, 0.0, {"model": "m", "scoring": "cloze"}, lambda: predictions(items, 0))
    spec = {
        "model": "m",
        "vector": "none",
        "coeff": 0.0,
        "items": hashlib.sha256(json.dumps([[it.category, it.example_id, it.source, content_digest(it)] for it in items]).encode()).hexdigest()[:16],
        "scoring": "cloze",
        "scoring_version": SCORING_VERSION,
        "bos_policy": BOS_POLICY,
    }
    name = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]
    rows = [json.loads(x) for x in (tmp_path / "predictions" / f"{name}.jsonl").read_text().splitlines()]
    assert [r["pred"] for r in rows] == [p.pred for p in predictions(items, 0)]
    assert json.loads((tmp_path / "predictions" / "index.json").read_text())[name]["n"] == 5


def test_rows_recompute_a_truncated_file(tmp_path: Path) -> None:
    store = PredictionStore(tmp_path)
    keys = [["anatomy", i] for i in range(3)]
    rows = [{"subject": "anatomy", "index": i, "correct": i == 1} for i in range(3)]
    assert store.rows(keys, vec(), 1.0, {"model": "m", "benchmark": "mmlu"}, lambda: rows) == rows
    (path,) = (tmp_path / "predictions").glob("*.jsonl")
    path.write_text(path.read_text().splitlines()[0] + "\n")  # an interrupted write of another tool
    other = [{"subject": "anatomy", "index": i, "correct": True} for i in range(3)]
    assert store.rows(keys, vec(), 1.0, {"model": "m", "benchmark": "mmlu"}, lambda: other) == other


def test_digests_follow_values() -> None:
    assert vector_digest(None) == "none"
    assert vector_digest(vec()) == vector_digest(vec(1.0)) != vector_digest(vec(2.0))
    assert items_digest([["a", 1]]) == hashlib.sha256(json.dumps([["a", 1]]).encode()).hexdigest()[:16]


def _write_entries(root: str, worker: int, n: int, start: Any) -> None:
    start.wait()  # every writer begins together
    store = PredictionStore(root)
    for k in range(n):
        keys = [["anatomy", worker, k]]
        store.rows(keys, None, 0.0, {"model": "m", "benchmark": "mmlu"}, lambda: [{"subject": "anatomy", "worker": worker, "k": k}])


def test_two_writers_keep_every_index_entry(tmp_path: Path) -> None:
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    start = ctx.Barrier(4)
    procs = [ctx.Process(target=_write_entries, args=(str(tmp_path), w, 25, start)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    index = json.loads((tmp_path / "predictions" / "index.json").read_text())
    assert len(index) == 100 == len(list((tmp_path / "predictions").glob("*.jsonl")))
    recomputed: list[int] = []
    store = PredictionStore(tmp_path)
    for w in range(4):  # every entry reads back without being computed again
        for k in range(25):
            store.rows([["anatomy", w, k]], None, 0.0, {"model": "m", "benchmark": "mmlu"}, lambda: recomputed.append(1) or [{}])
    assert recomputed == []


def test_an_edited_item_or_another_model_build_is_another_entry(items: list[BbqItem], tmp_path: Path) -> None:
    import dataclasses
    import warnings

    from lens_steer.models import load_model
    from lens_steer.store import model_fingerprint

    store = PredictionStore(tmp_path)
    store.bbq(items, None, 0.0, {"model": "m"}, lambda: predictions(items, 0))
    edited = [dataclasses.replace(items[0], context=items[0].context + " Both arrived late."), *items[1:]]  # same ids, other text
    assert store.bbq(edited, None, 0.0, {"model": "m"}, lambda: predictions(items, 1)) == predictions(items, 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        builds = [load_model("tiny-llama"), load_model("tiny-llama", dtype="bfloat16"), load_model("tiny-llama", process_weights=True), load_model("tiny-llama", seed=3)]
    prints = [model_fingerprint(m) for m in builds]
    assert prints[0] == model_fingerprint(load_model("tiny-llama"))  # the same build: the same fingerprint
    assert prints[1]["dtype"] == "bfloat16" and prints[0]["dtype"] == "float32"
    assert prints[2]["processing"] != prints[0]["processing"]
    assert len({json.dumps(p, sort_keys=True) for p in prints}) == 4  # dtype, processing and weights each change it
