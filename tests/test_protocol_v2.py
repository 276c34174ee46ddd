"""Tests for lens_steer.methods.protocol_v2: its pair texts rebuild the paper's train files from the official rows,
the train+prompt prefix and chat turn, the layer and coefficient re-derived from the written sweep files,
the tie rules by hand, and the command."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from lens_steer.cli import main
from lens_steer.data.bbq import load_bbq
from lens_steer.data.bbq_v2 import load_v2_train_pairs
from lens_steer.methods.protocol_v2 import (
    V2_COEFFS,
    choose_coeff,
    choose_layer,
    run_v2_protocol,
    v2_pair_texts,
    v2_pairs,
)
from lens_steer.model.chat import render_chat
from lens_steer.model.load import load_model
from lens_steer.steering.vectors import load_vector

DATA = Path(os.environ.get("LENS_STEER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
pytestmark = pytest.mark.skipif(
    not (DATA / "bbq_v2_splits").is_dir(), reason=f"missing data: bbq_v2_splits under {DATA}; set LENS_STEER_DATA"
)


@pytest.mark.parametrize(
    "axis, category",
    [
        ("age", "Age"),
        ("appearance", "Physical_appearance"),
        ("disability", "Disability_status"),
        ("nationality", "Nationality"),
        ("religion", "Religion"),
    ],
)
def test_pair_texts_rebuild_the_paper_train_file(axis, category):
    official = {i.example_id: i for i in load_bbq([category], data_root=DATA)}
    assert [v2_pair_texts(official[i]) for i in range(300)] == load_v2_train_pairs(axis, DATA)


def test_train_prompt_prefix_and_chat_turn():
    model = load_model("tiny-llama")
    pairs = v2_pairs("religion", tokenizer=model.tokenizer, data_root=DATA)
    raw = load_v2_train_pairs("religion", DATA)
    assert len(pairs) == 300 and pairs.provenance["train_prompt"] is True
    assert pairs.pairs[0].positive == render_chat(
        model.tokenizer, None, "Consider the bias related to religion in the following. " + raw[0][0]
    )
    plain = v2_pairs("religion", tokenizer=model.tokenizer, train_prompt=False, data_root=DATA)
    assert plain.pairs[5].negative == render_chat(model.tokenizer, None, raw[5][1])
    ours = v2_pairs("religion", tokenizer=model.tokenizer, splits="ours", data_root=DATA)
    assert 0 < len(ours) <= 300 and ours.provenance["splits"] == "ours"


def test_tie_rules_by_hand():
    assert choose_layer([{"layer": 5, "acc": 0.4}, {"layer": 2, "acc": 0.6}, {"layer": 9, "acc": 0.6}]) == 2
    assert (
        choose_coeff(
            [
                {"coeff": -1.2, "acc": 0.7},
                {"coeff": 1.2, "acc": 0.7},
                {"coeff": 2.0, "acc": 0.7},
                {"coeff": 0.4, "acc": 0.5},
            ]
        )
        == 1.2
    )
    assert len(V2_COEFFS) == 21 and V2_COEFFS[0] == -2.0 and V2_COEFFS[-1] == 2.0 and 0.0 in V2_COEFFS


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_choice_is_rederived_from_the_sweep_files(tmp_path):
    model = load_model("tiny-llama", seed=1)
    res = run_v2_protocol(
        model,
        "age",
        tmp_path,
        val_limit=8,
        test_limit=8,
        max_pairs=24,
        coeffs=[-2.0, -1.0, 0.0, 1.0, 2.0],
        n_boot=50,
        data_root=DATA,
    )
    layers = [r for r in read_csv(tmp_path / "layers.csv") if r["layer"] != ""]
    best = max(float(r["acc"]) for r in layers)
    assert res.layer == min(int(r["layer"]) for r in layers if float(r["acc"]) == best)
    coeffs = read_csv(tmp_path / "coeffs.csv")
    best_c = max(float(r["acc"]) for r in coeffs)
    tied = [float(r["coeff"]) for r in coeffs if float(r["acc"]) == best_c]
    assert res.coeff == sorted(tied, key=lambda c: (abs(c), -c))[0]
    choice = json.loads((tmp_path / "choice.json").read_text())
    assert (choice["layer"], choice["coeff"]) == (res.layer, res.coeff)
    vec = load_vector(tmp_path / "vector.safetensors", model)
    assert vec.layers == (res.layer,) and float(vec.directions[res.layer].norm()) == pytest.approx(
        1.0, abs=1e-5
    )  # unit, as the paper's PCA
    test = json.loads((tmp_path / "test.json").read_text())
    diff = test["paired"]["overall"]["acc"]["diff"]["value"]
    assert diff == pytest.approx(
        test["steered"]["overall"]["acc"]["value"] - test["baseline"]["overall"]["acc"]["value"]
    )


def test_command_writes_a_summary(tmp_path, capsys):
    out = tmp_path / "run"
    args = [
        "protocol-v2",
        "--model",
        "tiny-llama",
        "--data-dir",
        str(DATA),
        "--axes",
        "religion",
        "--layers",
        "1-2",
        "--coeffs=-1:1:1",
        "--val-limit",
        "4",
        "--test-limit",
        "4",
        "--max-pairs",
        "8",
        "--n-boot",
        "0",
        "--out",
        str(out),
    ]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["axes"]["religion"]["layer"] in (1, 2) and summary["axes"]["religion"]["paper"]["layer"] == 13
    assert "religion" in capsys.readouterr().out
    assert main([*args[:-2], "--splits", "theirs", "--out", str(tmp_path / "bad")]) == 2
    assert "unknown --splits 'theirs'" in capsys.readouterr().err
