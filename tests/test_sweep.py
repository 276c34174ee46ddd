"""Tests for lens_steer.methods.sweep: sweep cells against direct evaluations on the tiny model."""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from lens_steer.data.root import resolve_data_root
from lens_steer.data.select import select
from lens_steer.errors import LensSteerError
from lens_steer.extract.activations import extract_vector, pair_activations
from lens_steer.extract.pairs import axis_persona_pairs
from lens_steer.methods.sweep import run_sweep, sweep_axis
from lens_steer.model.load import TINY_MODEL, load_model
from lens_steer.specs import parse_coeffs
from lens_steer.tasks.bbq import run_bbq

try:
    DATA = resolve_data_root()
except LensSteerError:
    DATA = Path("/nonexistent-lens-steer-data")
needs_data = pytest.mark.skipif(
    not (DATA / "bbq").is_dir(), reason="missing data: shared data folder not available (set LENS_STEER_DATA)"
)


# ---- sweeps on the tiny model ----------------------------------------------------------------
@pytest.fixture(scope="module")
def model() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model(TINY_MODEL, seed=0)


@needs_data
def test_two_sweep_cells_equal_direct_evaluations(model: Any) -> None:
    items = select("age", "validation", 4)
    pairs = axis_persona_pairs("age", model.tokenizer, num_sents=6)
    seen: list[int] = []
    rows: list[dict] = []
    result = sweep_axis(
        model,
        "age",
        [1, 2],
        [-8.0, 0.0],
        num_sents=6,
        limit=4,
        n_boot=50,
        max_batch=8,
        scoring="letter",
        progress=seen.append,
        on_row=rows.append,
    )
    # extraction (2 texts per pair) + baseline once + 2 layers x 1 non-zero coefficient
    assert sum(seen) == 2 * len(pairs) + len(items) * (1 + 2 * 1)
    assert len(result.rows) == 4 and rows[0]["kind"] == "baseline" and rows[1:] == result.rows
    cells = {(r["layer"], r["coeff"]): r for r in result.rows}

    unsteered = run_bbq(model, items, n_boot=50, scoring="letter")
    for layer, coeff in [(2, -8.0), (1, -8.0)]:
        vector = extract_vector(model, pairs, [layer], method="pca_diff")  # a separate extraction of that layer alone
        run = run_bbq(model, items, vector=vector, coeff=coeff, n_boot=50, scoring="letter")
        # the steering moved the option scores (otherwise the comparison below would be vacuous)
        assert any(a["option_scores"] != b["option_scores"] for a, b in zip(unsteered.records, run.records))
        direct = run.metrics["overall"]
        cell = cells[(layer, coeff)]
        assert cell["value"] == pytest.approx(direct["acc"]["value"], abs=1e-12)
        assert (cell["ci_low"], cell["ci_high"]) == pytest.approx(
            (direct["acc"]["ci_low"], direct["acc"]["ci_high"]), abs=1e-12
        )
        for name in ("acc_ambig", "acc_disambig", "unknown_rate_ambig", "bias_disambig", "bias_ambig"):
            assert cell[name] == pytest.approx(direct[name]["value"], abs=1e-12)
        assert cell["vector_norm"] == pytest.approx(float(vector.directions[layer].norm()), abs=1e-5)
        assert cell["added_norm"] == pytest.approx(abs(coeff) * cell["vector_norm"])

    base = unsteered.metrics["overall"]["acc"]["value"]
    assert result.baseline["value"] == base == cells[(1, 0.0)]["value"] == cells[(2, 0.0)]["value"]


@needs_data
def test_rows_record_the_mean_contrast_norm_and_csv_round_trips(model: Any) -> None:
    pairs = axis_persona_pairs("religion", model.tokenizer, num_sents=4)
    acts = pair_activations(model, pairs, [0, 3])
    items = select("religion", "validation", 4)
    result = run_sweep(
        model, acts, items, [3], [0.5], method="mean_diff", n_boot=0, metric="acc_ambig", scoring="letter"
    )
    (row,) = result.rows
    expected = float((acts.positive[3] - acts.negative[3]).mean(0).norm())
    assert row["vector_norm"] == pytest.approx(expected, rel=1e-5)
    assert row["metric"] == "acc_ambig" and row["value"] == row["acc_ambig"]
    parsed = list(csv.DictReader(io.StringIO(result.to_csv())))
    assert [p["kind"] for p in parsed] == ["baseline", "cell"]
    assert parsed[0]["layer"] == "" and float(parsed[1]["vector_norm"]) == pytest.approx(expected, rel=1e-5)
    # every method in the one unit: a PCA direction is scaled to the same mean contrast, as the search's vectors are
    pca = run_sweep(model, acts, items, [3], [0.5], method="pca_diff", n_boot=0, scoring="letter")
    assert pca.rows[0]["vector_norm"] == pytest.approx(expected, rel=1e-5) and pca.config["scale"] == "contrast"


@needs_data
def test_sweep_bad_input(model: Any) -> None:
    acts = pair_activations(model, [("a b", "c d"), ("e f", "g h")], [1])
    items = select("age", "validation", 4)
    with pytest.raises(LensSteerError, match="empty coefficient grid"):
        run_sweep(model, acts, items, [1], [])
    with pytest.raises(LensSteerError, match=r"0\.\.3"):
        run_sweep(model, acts, items, [7], [1.0])
    with pytest.raises(LensSteerError, match="unknown sweep metric"):
        run_sweep(model, acts, items, [1], [1.0], metric="accuracy")
    with pytest.raises(LensSteerError, match="unknown axis"):
        sweep_axis(model, "height", [1], [1.0])
    assert torch.is_tensor(acts.positive[1])


# ---- the CLI ---------------------------------------------------------------------------------
def test_cli_reads_a_negative_coefficient_grid_as_a_value() -> None:
    from lens_steer.cli import build_parser

    args = build_parser().parse_args(
        ["sweep", "--axis", "age", "--layers", "1-2", "--coeffs", "-2:2:0.5", "--out", "x"]
    )
    assert args.coeffs == "-2:2:0.5" and parse_coeffs(args.coeffs)[0] == -2.0
    args = build_parser().parse_args(["sweep", "--axis", "age", "--layers", "1", "--coeffs", "-1,1", "--out", "x"])
    assert args.coeffs == "-1,1"


@needs_data
def test_cli_writes_table_figure_and_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lens_steer.cli import main

    argv = [
        "sweep",
        "--model",
        TINY_MODEL,
        "--axis",
        "ses",
        "--layers",
        "2",
        "--coeffs",
        "-4,0",
        "--out",
        str(tmp_path),
        "--limit",
        "4",
        "--scoring",
        "letter",
        "--num-sents",
        "3",
        "--n-boot",
        "0",
    ]
    assert main(argv) == 0
    rows = list(csv.DictReader((tmp_path / "sweep.csv").open()))
    assert [(r["kind"], r["layer"], r["coeff"]) for r in rows] == [
        ("baseline", "", "0.0"),
        ("cell", "2", "-4.0"),
        ("cell", "2", "0.0"),
    ]
    assert rows[0]["value"] == rows[2]["value"]
    html = (tmp_path / "sweep.html").read_text()
    assert html.rstrip().endswith("</html>") and '"type":"heatmap"' in html
    assert "baseline" in capsys.readouterr().out
    assert main([*argv[:6], "0-9", *argv[7:]]) == 2
    assert "outside the model's layers 0..3" in capsys.readouterr().err
