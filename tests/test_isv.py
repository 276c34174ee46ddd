"""Tests for lens_steer.methods.isv: ISVs read from files and run folders, and the BBQ source their searches used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lens_steer.errors import StudyError, VectorError
from lens_steer.methods.isv import Isv, load_isvs, searched_bbq_source
from lens_steer.steering.vectors import SteeringVector, VectorMetadata


def _vec(dirs: dict[int, list[float]], model: str = "m", **prov) -> SteeringVector:
    d = len(next(iter(dirs.values())))
    return SteeringVector(
        {k: torch.tensor(v) for k, v in dirs.items()}, VectorMetadata(model_name=model, d_model=d, provenance=prov)
    )


def test_load_isvs_refuses_mixed_models_and_duplicates(tmp_path: Path) -> None:
    _vec({1: [1.0, 0.0]}, model="model-a", axis="age", coeff=1.0).save(tmp_path / "a.safetensors")
    _vec({1: [0.0, 1.0]}, model="model-b", axis="ses", coeff=1.0).save(tmp_path / "b.safetensors")
    _vec({1: [0.0, 1.0]}, model="model-a", axis="age", coeff=-1.0).save(tmp_path / "c.safetensors")
    _vec({1: [0.0, 1.0]}, model="model-a").save(tmp_path / "plain.safetensors")
    with pytest.raises(VectorError) as e:
        load_isvs([tmp_path / "a.safetensors", tmp_path / "b.safetensors"])
    assert "model-b" in str(e.value) and "model-a" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(StudyError, match="two ISVs for axis age"):
        load_isvs([tmp_path / "a.safetensors", tmp_path / "c.safetensors"])
    with pytest.raises(VectorError, match="not written by `lens-steer search`"):
        load_isvs([tmp_path / "plain.safetensors"])
    with pytest.raises(StudyError, match="no ISV"):
        load_isvs([])
    isv = load_isvs([tmp_path / "c.safetensors"])
    assert isv[0].axis == "age" and isv[0].coeff == -1.0


def test_the_searched_bbq_source_is_read_from_each_isv_run(tmp_path: Path) -> None:
    v = _vec({1: [1.0, 0.0]})
    runs = []
    for name, source in (("a", "generated"), ("b", "generated"), ("c", None)):
        (tmp_path / name).mkdir()
        if source is not None:
            (tmp_path / name / "study.json").write_text(json.dumps({"config": {"bbq_source": source}}))
        runs.append(Isv(name, v, 1.0, tmp_path / name / "isv.safetensors"))
    assert searched_bbq_source(runs) == "generated"  # the run without a study.json says nothing
    assert searched_bbq_source([Isv("x", v, 1.0)]) == "official"
    (tmp_path / "c" / "study.json").write_text(json.dumps({"config": {"bbq_source": "official"}}))
    with pytest.raises(StudyError, match="different BBQ sources"):
        searched_bbq_source(runs)


def test_repr_is_short_and_computed_from_the_isv(tmp_path: Path) -> None:
    dirs = {layer: [float(layer)] * 576 for layer in range(13, 26)}
    params = {"corpus": "sexuality", "num_sents": 50, "layers": "13-25", "method": "pca_diff", "coeff": 3.6}
    vec = _vec(dirs, scale="contrast", coeff=3.6, params=params, example_ids=list(range(3000)))
    isv = Isv("nationality", vec, 3.6, tmp_path / ("deep" * 30) / "isv.safetensors", value=0.4375, n_trials=8)
    text = repr(isv)
    assert len(text) <= 400 and "tensor(" not in text and "3000" not in text
    norms = vec.norms()
    assert text.startswith("Isv(axis='nationality', coeff=+3.6, layers=13-25 (13 layers), ")
    assert f"norms={min(norms.values()):.3g}..{max(norms.values()):.3g}" in text
    assert "pairs='sexuality' x 50" in text and "value=0.4375" in text and "trials=8" in text
    assert "scale='contrast'" in text and "isv.safetensors'" in text
    assert repr(Isv("age", _vec({1: [1.0, 0.0]}), -2.0)) == (
        "Isv(axis='age', coeff=-2, layers=[1], norms={1: 1}, method='unknown', scale=None)"
    )
