"""Tests for analyses/optimized_fit.py on the tiny model: every accuracy it writes equals one recomputed here from the
predictions by hand, and the test split is read only when a layer beat the unsteered model on validation."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from _study_fixtures import needs_data

from lens_steer.data.select import select
from lens_steer.extract.optimize import OptimizeConfig, fit_optimized_vector
from lens_steer.forward.questions import Question
from lens_steer.model.load import load_model
from lens_steer.tasks.bbq import bbq_predictions

SCRIPT = Path(__file__).resolve().parents[1] / "analyses" / "optimized_fit.py"


def script():
    spec = importlib.util.spec_from_file_location("optimized_fit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def by_hand(preds, cond: str) -> float:
    rows = [p for p in preds if p.context_condition == cond]
    return sum(1 for p in rows if p.pred == p.label) / len(rows)


@needs_data
def test_written_accuracies_equal_a_recount(tmp_path):
    args = ["--model", "tiny-llama", "--axes", "age", "--layers", "1", "--items", "8", "--val", "8", "--test", "8"]
    assert script().main([*args, "--epochs", "2", "--out", str(tmp_path)]) == 0
    row = json.loads((tmp_path / "optimized_fit.json").read_text())["axes"]["age"]
    model = load_model("tiny-llama")
    train = select("age", "train", 8, seed=0)
    val = select("age", "validation", 8, seed=0)
    iv = fit_optimized_vector(
        model,
        [(Question(i.context, i.question, tuple(i.answers)), int(i.label)) for i in train],
        1,
        OptimizeConfig(epochs=2),
    )
    for split, items in (("train", train), ("val", val)):
        plain = bbq_predictions(model, items)[1]
        steered = bbq_predictions(model, items, intervention=iv)[1]
        for cond in ("ambig", "disambig"):
            assert row["unsteered"][split][cond] == by_hand(plain, cond)
            assert row["layers"]["1"]["steered"][split][cond] == by_hand(steered, cond)
    beat = row["layers"]["1"]["val_objective"] > row["val_objective_unsteered"]
    assert (row["test"]["layer"] == 1) == beat and ("paired" in row["test"]) == beat
