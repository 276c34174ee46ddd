"""Tests for lens_steer.methods.geometry: cosines by hand, the saved vectors, PCA against numpy, the random
reference."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from lens_steer.data.root import resolve_data_root
from lens_steer.errors import LensSteerError
from lens_steer.extract.activations import pair_activations
from lens_steer.extract.pairs import axis_persona_pairs
from lens_steer.methods.geometry import (
    axis_cosines,
    axis_vectors,
    cosine_matrix,
    layer_cosines,
    matrix_rows,
    norm_rows,
    pca_2d,
    random_cosine_reference,
    random_direction_cosines,
    save_axis_vectors,
)
from lens_steer.model.load import TINY_MODEL, load_model
from lens_steer.steering.vectors import SteeringVector, VectorMetadata

try:
    DATA = resolve_data_root()
except LensSteerError:
    DATA = Path("/nonexistent-lens-steer-data")
needs_data = pytest.mark.skipif(
    not (DATA / "prompt_corpora").is_dir(),
    reason="missing data: shared data folder not available (set LENS_STEER_DATA)",
)


def vec(directions: dict[int, list[float]]) -> SteeringVector:
    d = len(next(iter(directions.values())))
    return SteeringVector({k: torch.tensor(v) for k, v in directions.items()}, VectorMetadata("m", d))


def test_cosine_matrix_by_hand() -> None:
    a, b, c = [3.0, 4.0, 0.0], [0.0, 1.0, 0.0], [-3.0, -4.0, 0.0]
    m = cosine_matrix([torch.tensor(a), torch.tensor(b), torch.tensor(c)])
    hand = np.array([[1, 0.8, -1], [0.8, 1, -0.8], [-1, -0.8, 1]])  # cos(a, b) = 4 / (5 * 1)
    np.testing.assert_allclose(m, hand, atol=1e-12)


def test_cosine_matrix_symmetric_unit_diagonal_and_equal_to_a_loop() -> None:
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(7, 50, generator=g) * torch.arange(1, 8)[:, None]
    m = cosine_matrix(rows)
    assert np.array_equal(m, m.T) and np.allclose(np.diag(m), 1.0)
    r = rows.double().numpy()
    for i in range(7):
        for j in range(7):
            expected = (
                sum(r[i, k] * r[j, k] for k in range(50))
                / math.sqrt(sum(x * x for x in r[i]))
                / math.sqrt(sum(x * x for x in r[j]))
            )
            assert m[i, j] == pytest.approx(expected, abs=1e-12)
    with pytest.raises(LensSteerError, match="vector 1 is zero"):
        cosine_matrix([torch.ones(3), torch.zeros(3)])


def test_axis_and_layer_cosines_and_norms() -> None:
    vs = {"x": vec({0: [1, 0], 1: [1, 1]}), "y": vec({0: [0, 2], 1: [2, 0]})}
    names, m = axis_cosines(vs, 1)
    assert names == ["x", "y"] and m[0, 1] == pytest.approx(1 / math.sqrt(2))
    layers, lm = layer_cosines(vs["y"])
    assert layers == [0, 1] and lm[0, 1] == pytest.approx(0.0)
    assert norm_rows(vs) == [
        {"axis": "x", "layer": 0, "norm": 1.0},
        {"axis": "x", "layer": 1, "norm": pytest.approx(math.sqrt(2))},
        {"axis": "y", "layer": 0, "norm": 2.0},
        {"axis": "y", "layer": 1, "norm": 2.0},
    ]
    assert matrix_rows(names, m, "axis")[1] == {"axis": "y", "x": pytest.approx(m[1, 0]), "y": 1.0}
    with pytest.raises(LensSteerError, match="has no layer 5"):
        axis_cosines(vs, 5)


def test_pca_2d_matches_numpy_covariance_eigenvectors() -> None:
    g = torch.Generator().manual_seed(1)
    rows = torch.randn(9, 20, generator=g)
    coords, ratio = pca_2d(rows)
    unit = rows.double().numpy() / np.linalg.norm(rows.double().numpy(), axis=1, keepdims=True)
    centred = unit - unit.mean(0)
    evals, evecs = np.linalg.eigh(centred.T @ centred)
    order = np.argsort(evals)[::-1]
    expected = centred @ evecs[:, order[:2]]
    for j in range(2):  # components are defined up to sign
        assert min(np.abs(coords[:, j] - expected[:, j]).max(), np.abs(coords[:, j] + expected[:, j]).max()) < 1e-9
    np.testing.assert_allclose(ratio, evals[order[:2]] / evals.sum(), atol=1e-9)


def test_random_reference_matches_simulation() -> None:
    ref = random_cosine_reference(576)
    assert ref["sd"] == pytest.approx(1 / 24) and ref["mean_abs"] == pytest.approx(math.sqrt(2 / (math.pi * 576)))
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, 4000, 576))
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert np.std(cos) == pytest.approx(ref["sd"], rel=0.05)
    assert np.mean(np.abs(cos)) == pytest.approx(ref["mean_abs"], rel=0.05)


@needs_data
def test_axis_vectors_saved_files_reproduce_the_cosines(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(TINY_MODEL, seed=0)
    vectors = axis_vectors(model, ["age", "religion", "ses"], num_sents=4)
    assert all(v.layers == (0, 1, 2, 3) for v in vectors.values())
    # in the one coefficient unit: each layer's direction has the norm of the axis's mean contrast there
    acts = pair_activations(model, axis_persona_pairs("age", model.tokenizer, num_sents=4), [0, 1, 2, 3])
    for layer, n in vectors["age"].norms().items():
        contrast = float((acts.positive[layer].double() - acts.negative[layer].double()).mean(0).norm())
        assert n == pytest.approx(contrast, rel=1e-4) and vectors["age"].scale == "contrast"
    paths = save_axis_vectors(vectors, tmp_path)
    loaded = {name: load_file(str(p)) for name, p in paths.items()}  # plain safetensors, no lens_steer
    names, m = axis_cosines(vectors, 2)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            va, vb = (
                loaded[a]["blocks.2.hook_resid_post"].astype(np.float64),
                loaded[b]["blocks.2.hook_resid_post"].astype(np.float64),
            )
            assert m[i, j] == pytest.approx(va @ vb / np.linalg.norm(va) / np.linalg.norm(vb), abs=1e-6)
    rnd = random_direction_cosines(vectors, 2, seed=0)
    assert set(rnd) == set(names) and all(-1 <= c <= 1 for c in rnd.values())
    assert (
        vectors["ses"].metadata.provenance["axis"] == "ses"
        and vectors["ses"].metadata.provenance["corpus"] == "socioeconomic"
    )
