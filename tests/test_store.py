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
from lens_steer.forward.questions import SCORING_VERSION
from lens_steer.model.tokens import BOS_POLICY
from lens_steer.steering.vectors import SteeringVector, VectorMetadata
from lens_steer.tasks.metrics import BbqPrediction
from lens_steer.tasks.store import PredictionStore, content_digest, items_digest, through_store, vector_digest


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
    PredictionStore(tmp_path).bbq(
        items[:4], vec(), 2.0, {"model": "m", "scoring": "cloze"}, lambda: predictions(items, 4)[:4]
    )
    assert calls == [0, 1, 2, 3]
    index = json.loads((tmp_path / "predictions" / "index.json").read_text())
    assert len(index) == 5 and {e["file"] for e in index.values()} == {
        p.name for p in (tmp_path / "predictions").glob("*.jsonl")
    }


def test_the_index_describes_each_file_and_another_process_reads_it_back(items: list[BbqItem], tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    PredictionStore(tmp_path).bbq(items, None, 0.0, {"model": "m", "scoring": "cloze"}, lambda: predictions(items, 0))
    (path,) = (tmp_path / "predictions").glob("*.jsonl")
    (entry,) = json.loads((tmp_path / "predictions" / "index.json").read_text()).values()
    assert (
        entry["file"] == path.name
        and entry["n"] == 5
        and entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    )
    assert (entry["model"], entry["vector"], entry["coeff"], entry["scoring"]) == ("m", "none", 0.0, "cloze")
    assert entry["scoring_version"] == SCORING_VERSION and entry["bos_policy"] == BOS_POLICY
    assert [json.loads(x)["pred"] for x in path.read_text().splitlines()] == [p.pred for p in predictions(items, 0)]
    # the same request in another interpreter (another hash seed) finds the file: the key is stable
    code = (
        "import sys; from lens_steer.data.bbq import load_bbq; from lens_steer.tasks.store import PredictionStore; "
        "items = load_bbq(['Age'])[:5]; "
        "got = PredictionStore(sys.argv[1]).bbq("
        "items, None, 0.0, {'model': 'm', 'scoring': 'cloze'}, lambda: sys.exit('recomputed')); "
        "print([p.pred for p in got])"
    )
    res = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "7"},
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-1000:]
    assert res.stdout.strip() == str([p.pred for p in predictions(items, 0)])


@pytest.mark.parametrize("damage", ["edited value", "garbage bytes", "unindexed file", "damaged index"])
def test_a_corrupt_predictions_file_is_recomputed_never_trusted(
    items: list[BbqItem], tmp_path: Path, damage: str
) -> None:
    store = PredictionStore(tmp_path)
    store.bbq(items, vec(), 1.0, {"model": "m"}, lambda: predictions(items, 0))
    (path,) = (tmp_path / "predictions").glob("*.jsonl")
    index = tmp_path / "predictions" / "index.json"
    good = path.read_bytes()
    if damage == "edited value":  # still valid JSON, same number of rows: only the checksum tells
        rows = [json.loads(x) for x in good.decode().splitlines()]
        rows[2]["pred"] = (rows[2]["pred"] + 1) % 3
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif damage == "garbage bytes":
        path.write_bytes(good[: len(good) // 2] + b"\x00\xff{not json")
    elif damage == "unindexed file":  # a run killed between writing the file and its index entry
        index.unlink()
        path.write_text("".join(json.dumps({**json.loads(x), "pred": 0}) + "\n" for x in good.decode().splitlines()))
    else:
        index.write_text('{"truncated": ')
    calls: list[int] = []
    again = PredictionStore(tmp_path).bbq(
        items, vec(), 1.0, {"model": "m"}, lambda: calls.append(1) or predictions(items, 1)
    )
    assert calls == [1] and again == predictions(items, 1)  # recomputed, not read back
    assert json.loads(index.read_text())[path.stem]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    third = PredictionStore(tmp_path).bbq(items, vec(), 1.0, {"model": "m"}, lambda: calls.append(2) or [])
    assert calls == [1] and third == predictions(items, 1)  # the rewritten file is trusted again


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
    assert items_digest([["a", 1]]) == items_digest([["a", 1]]) != items_digest([["a", 2]])
    assert items_digest([["a", 1], ["b", 2]]) != items_digest([["b", 2], ["a", 1]])  # the order of the items counts


def _write_entries(root: str, worker: int, n: int, start: Any) -> None:
    start.wait()  # every writer begins together
    store = PredictionStore(root)
    for k in range(n):
        keys = [["anatomy", worker, k]]
        store.rows(
            keys,
            None,
            0.0,
            {"model": "m", "benchmark": "mmlu"},
            lambda: [{"subject": "anatomy", "worker": worker, "k": k}],
        )


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
            store.rows(
                [["anatomy", w, k]],
                None,
                0.0,
                {"model": "m", "benchmark": "mmlu"},
                lambda: recomputed.append(1) or [{}],
            )
    assert recomputed == []


def test_an_edited_item_is_another_entry(items: list[BbqItem], tmp_path: Path) -> None:
    import dataclasses

    store = PredictionStore(tmp_path)
    store.bbq(items, None, 0.0, {"model": "m"}, lambda: predictions(items, 0))
    edited = [
        dataclasses.replace(items[0], context=items[0].context + " Both arrived late."),
        *items[1:],
    ]  # same ids, other text
    assert store.bbq(edited, None, 0.0, {"model": "m"}, lambda: predictions(items, 1)) == predictions(items, 1)


def test_through_store_computes_without_a_store_and_reads_back_with_one(items: list[BbqItem], tmp_path: Path) -> None:
    from lens_steer.data.mmlu import MmluItem

    calls: list[str] = []

    def settings() -> dict[str, Any]:
        calls.append("settings")
        return {"model": "m", "scoring": "cloze"}

    for shift in (0, 1):  # no store: computed every time, settings never asked for
        assert through_store(
            None, "bbq", items, vec(), 1.0, settings, lambda shift=shift: predictions(items, shift)
        ) == predictions(items, shift)
    assert calls == []
    first = through_store(tmp_path, "bbq", items, vec(), 1.0, settings, lambda: predictions(items, 0))
    assert (
        through_store(tmp_path, "bbq", items, vec(), 1.0, settings, lambda: predictions(items, 1))
        == first
        == predictions(items, 0)
    )
    assert first == PredictionStore(tmp_path).bbq(
        items, vec(), 1.0, settings(), lambda: []
    )  # the store's own BBQ path, same entry
    mmlu = [MmluItem("anatomy", f"question {k}", ("a", "b", "c", "d"), k % 4, k) for k in range(3)]
    rows = [{"subject": it.subject, "index": it.index, "correct": k == 0} for k, it in enumerate(mmlu)]
    assert through_store(tmp_path, "mmlu", mmlu, None, 0.0, settings, lambda: rows) == rows
    keys = [[it.subject, it.index, content_digest(it)] for it in mmlu]
    assert (
        PredictionStore(tmp_path).rows(keys, None, 0.0, settings(), lambda: [], categories=["anatomy"]) == rows
    )  # keyed by subject, index, content
    with pytest.raises(LensSteerError, match="not 'crows'"):
        through_store(tmp_path, "crows", mmlu, None, 0.0, settings, lambda: rows)
