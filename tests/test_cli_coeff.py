"""`eval`, `generate` and `export` apply a vector file at its stored coefficient unless --coeff is given, say which
one they used, and match the library (`lens_steer.evaluate`, `generate`) called at that coefficient."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from _hf_pair import random_vector
from _tiny_models import bridge_only, make_tiny, single_thread  # noqa: F401 (autouse fixture)

from lens_steer import evaluate, load_vector
from lens_steer.cli import main
from lens_steer.forward.generation import generate
from lens_steer.model.tokens import encode_texts
from lens_steer.steering.vectors import SteeringVector

DATA = Path(os.environ.get("LENS_STEER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_data = pytest.mark.skipif(
    not (DATA / "bbq").is_dir(), reason=f"missing data: shared data not found at {DATA}; set LENS_STEER_DATA"
)
pytestmark = bridge_only
STORED = 3.0
EVAL = ["eval", "--model", "tiny-llama", "--data-dir", str(DATA), "--bench", "bbq", "--categories", "Age"]
EVAL += ["--limit", "8", "--scoring", "letter", "--n-boot", "50"]


@pytest.fixture(scope="module")
def model() -> Any:
    return make_tiny("bridge")


def with_coeff(vector: SteeringVector, coeff: float) -> SteeringVector:
    """`vector` carrying a stored coefficient, as an ISV file does."""
    prov = {**vector.metadata.provenance, "coeff": coeff, "scale": "contrast"}
    return SteeringVector(dict(vector.directions), dataclasses.replace(vector.metadata, provenance=prov))


def cli_eval(tmp_path: Path, name: str, *extra: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    out = tmp_path / name
    assert main([*EVAL, *extra, "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return rows, json.loads((out / "metrics.json").read_text())["meta"]


def library_eval(model: Any, vector: SteeringVector, coeff: float | None) -> list[dict[str, Any]]:
    kw = {"categories": "Age", "limit": 8, "scoring": "letter", "n_boot": 50, "data_root": DATA}
    return evaluate(model, "bbq", vector=vector, coeff=coeff, **kw).records


def same_predictions(cli: list[dict[str, Any]], lib: list[dict[str, Any]]) -> bool:
    keys = ("category", "example_id", "pred")
    return [[r[k] for k in keys] for r in cli] == [[r[k] for k in keys] for r in lib] and all(
        a["option_logliks"] == pytest.approx(b["option_logliks"], abs=1e-5) for a, b in zip(cli, lib)
    )


@needs_data
def test_eval_uses_the_stored_coefficient_unless_coeff_is_given(
    model: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vector = with_coeff(random_vector(model, [1, 2], scale=6.0), STORED)
    path = vector.save(tmp_path / "isv.safetensors")
    at_stored, at_one, at_given = (library_eval(model, vector, c) for c in (STORED, 1.0, -2.0))
    assert not same_predictions(at_stored, at_one)  # the coefficients steer differently: the checks below can fail

    rows, meta = cli_eval(tmp_path, "stored", "--vector", str(path))
    assert same_predictions(rows, at_stored) and same_predictions(library_eval(model, vector, None), at_stored)
    assert meta["coeff"] == STORED and meta["coeff_source"] == "the vector's stored coefficient"
    out = capsys.readouterr().out
    assert f"steering with {path} at coefficient 3 (the vector's stored coefficient; coefficient 1 = the mean" in out

    rows, meta = cli_eval(tmp_path, "given", "--vector", str(path), "--coeff", "-2")
    assert same_predictions(rows, at_given) and meta["coeff"] == -2.0 and meta["coeff_source"] == "--coeff"
    assert "at coefficient -2 (--coeff;" in capsys.readouterr().out

    plain = random_vector(model, [1, 2], scale=6.0).save(tmp_path / "plain.safetensors")  # stores no coefficient
    rows, meta = cli_eval(tmp_path, "plain", "--vector", str(plain))
    assert same_predictions(rows, at_one) and meta["coeff"] == 1.0
    assert "at coefficient 1 (default; the vector stores none; coefficient 1 = not recorded" in capsys.readouterr().out


def test_generate_uses_the_stored_coefficient_unless_coeff_is_given(
    model: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vector = with_coeff(random_vector(model, [1, 2], scale=6.0), STORED)
    path = vector.save(tmp_path / "isv.safetensors")
    ids = encode_texts(model, ["Hello there"])
    kw = {"max_new_tokens": 8, "repetition_penalty": 2.0}
    text = {c: generate(model, ids, vector=vector, coeff=c, **kw)[0].text for c in (STORED, 0.5)}
    assert text[STORED] != text[0.5]
    base = ["generate", "Hello there", "--model", "tiny-llama", "--max-new-tokens", "8", "--repetition-penalty", "2"]
    base += ["--vector", str(path)]
    assert main(base) == 0
    got = capsys.readouterr()
    assert got.out == text[STORED] + "\n" and "at coefficient 3 (the vector's stored coefficient" in got.err
    assert main([*base, "--coeff", "0.5"]) == 0
    got = capsys.readouterr()
    assert got.out == text[0.5] + "\n" and "at coefficient 0.5 (--coeff" in got.err


def test_export_applies_the_stored_coefficient_and_the_import_says_so(
    model: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vector = with_coeff(random_vector(model, [1, 2], scale=2.0), STORED)
    path = vector.save(tmp_path / "isv.safetensors")
    out = tmp_path / "isv.pt"
    assert main(["export", str(path), "--to", "lm-eval", "--out", str(out)]) == 0
    assert "coefficient 3 (the vector's stored coefficient)" in capsys.readouterr().out
    back = load_vector(out, model)
    for layer in (1, 2):
        assert torch.allclose(back.directions[layer], STORED * vector.directions[layer])
    # the coefficient is multiplied in: applied as it is, coefficient 1 is what the file does
    assert back.coeff is None and back.scale == "file"
    assert back.metadata.provenance["exported"] == {"scale": "contrast", "coeff": STORED}


@pytest.mark.parametrize("command", [["eval", "--bench", "bbq", "--out", "x"], ["generate", "Hi"]])
def test_a_coefficient_without_a_vector_is_one_line(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--model", "tiny-llama", "--coeff", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --coeff scales a steering vector; give --vector") and "\n" not in err
