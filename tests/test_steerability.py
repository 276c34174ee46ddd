"""Tests for lens_steer.methods.steerability: margins, wrong-way shares and slopes recomputed from the per-item
margins by hand and with numpy's polyfit; the steerability-bias check on constructed shifts; a real steered run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lens_steer.errors import LensSteerError
from lens_steer.methods.steerability import (
    correct_margin,
    margin_changes,
    margin_slopes,
    steerability_bias,
    steerability_report,
    wrong_way_share,
)
from lens_steer.tasks.metrics import BbqPrediction


def logsm(x) -> tuple[float, float, float]:
    x = np.asarray(x, dtype=float)
    x = x - x.max()
    return tuple((x - np.log(np.exp(x).sum())).tolist())


def pred(i: int, lp, label: int, cond: str = "disambig", unknown: int = 2) -> BbqPrediction:
    lp = logsm(lp)
    return BbqPrediction(i, "Age", cond, "neg", int(np.argmax(lp)), label, unknown, None, lp)


def random_runs(n: int, seed: int):
    rng = np.random.default_rng(seed)
    base, steered = [], []
    for i in range(n):
        cond = "ambig" if i % 3 == 0 else "disambig"
        unk = i % 3
        label = unk if cond == "ambig" else (unk + 1 + i % 2) % 3
        x = rng.normal(size=3)
        base.append(pred(i, x, label, cond, unk))
        steered.append(pred(i, x + rng.normal(scale=0.7, size=3), label, cond, unk))
    return base, steered


def test_margin_by_hand():
    p = pred(0, [2.0, 1.0, 0.5], label=1)
    lp = logsm([2.0, 1.0, 0.5])
    assert correct_margin(p) == pytest.approx(lp[1] - lp[0])  # label's log-prob minus the best other one
    assert (correct_margin(p) > 0) == p.correct


def test_wrong_way_share_recomputed_from_margins():
    base, steered = random_runs(90, seed=0)
    rep = steerability_report(base, steered, n_boot=300, seed=4)
    deltas = [correct_margin(s) - correct_margin(b) for b, s in zip(base, steered)]
    assert [r["delta"] for r in rep["items"]] == pytest.approx(deltas)
    share = sum(d < 0 for d in deltas) / len(deltas)
    assert rep["wrong_way_share"]["value"] == pytest.approx(share)
    idx = np.random.default_rng(4).integers(0, len(deltas), size=(300, len(deltas)))  # bootstrap_ci's documented draw
    boots = [(np.asarray(deltas)[row] < 0).mean() for row in idx]
    assert (rep["wrong_way_share"]["ci_low"], rep["wrong_way_share"]["ci_high"]) == pytest.approx(
        tuple(np.quantile(boots, [0.025, 0.975]))
    )
    amb = [d for d, b in zip(deltas, base) if b.context_condition == "ambig"]
    assert rep["wrong_way_share_by_condition"]["ambig"]["value"] == pytest.approx(sum(d < 0 for d in amb) / len(amb))
    assert sum(rep["histogram"]["counts"]) == len(deltas)


def test_slopes_equal_polyfit():
    coeffs = [-1.0, 0.0, 0.5, 2.0]
    rng = np.random.default_rng(1)
    x0 = rng.normal(size=(12, 3))
    direction = rng.normal(size=(12, 3))
    sweep = {
        c: [pred(i, x0[i] + c * direction[i] + 0.1 * rng.normal(size=3), label=i % 2) for i in range(12)]
        for c in coeffs
    }
    slopes = margin_slopes(sweep)
    for i in range(12):
        y = [correct_margin(sweep[c][i]) for c in coeffs]
        assert slopes[("Age", i)] == pytest.approx(np.polyfit(coeffs, y, 1)[0])
    rep = steerability_report(sweep[0.0], sweep[2.0], sweep=sweep, n_boot=0)
    assert rep["slopes"]["anti_steerable_share"]["value"] == pytest.approx(np.mean([v < 0 for v in slopes.values()]))
    with pytest.raises(LensSteerError, match="at least two coefficients"):
        margin_slopes({1.0: sweep[1.0] if 1.0 in sweep else sweep[0.0]})


def test_bias_check_finds_a_position_and_unknown_preference():
    rng = np.random.default_rng(2)
    base = [pred(i, rng.normal(size=3), label=i % 2, unknown=2) for i in range(60)]
    toward_a = [pred(p.example_id, np.asarray(p.option_logprobs) + [1.5, 0.0, 0.0], p.label, unknown=2) for p in base]
    b = steerability_bias(base, toward_a, n_boot=300, seed=0)
    assert b["favoured_positions"] == ["0"] and not b["favours_unknown"]
    assert b["position_shift"]["0"]["value"] == pytest.approx(
        1.5
    )  # +1.5 on one option, renormalised: contrast = 1.5 exactly
    # items whose label is at position 0 gain margin, the others lose it
    assert b["margin_change_by_gold_position"]["0"]["value"] > 0 > b["margin_change_by_gold_position"]["1"]["value"]
    # unknown sits at different positions per item: a vector that raises "unknown" is found as such, not as a position
    base_u = [pred(i, rng.normal(size=3), label=(i % 3 + 1) % 3, unknown=i % 3) for i in range(60)]
    toward_unknown = [
        pred(
            p.example_id,
            np.asarray(p.option_logprobs) + 1.2 * np.eye(3)[p.unknown_index],
            p.label,
            unknown=p.unknown_index,
        )
        for p in base_u
    ]
    u = steerability_bias(base_u, toward_unknown, n_boot=300, seed=0)
    assert u["favours_unknown"] and u["unknown_shift"]["value"] == pytest.approx(1.2) and u["favoured_positions"] == []
    ambiguous_only = [pred(i, [0, 0, 1], 2, cond="ambig") for i in range(3)]
    assert steerability_bias(ambiguous_only, ambiguous_only)["n"] == 0


def test_mismatched_runs_are_refused():
    base, steered = random_runs(6, seed=3)
    with pytest.raises(LensSteerError, match="1 only in base"):
        margin_changes(base, steered[:-1])
    with pytest.raises(LensSteerError, match="no option log-probabilities"):
        correct_margin(BbqPrediction(0, "Age", "ambig", "neg", 0, 2, 2, None, ()))
    with pytest.raises(LensSteerError, match="no margin changes"):
        wrong_way_share([])


def test_a_real_steered_run():
    import os
    from pathlib import Path

    from lens_steer.data.bbq import load_bbq
    from lens_steer.data.select import limit_bbq
    from lens_steer.model.load import PROCESSING_FLAGS, load_model
    from lens_steer.steering.vectors import SteeringVector, VectorMetadata
    from lens_steer.tasks.bbq import run_bbq

    data = Path(os.environ.get("LENS_STEER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    if not (data / "bbq").is_dir():
        pytest.skip(f"missing data: BBQ under {data}")
    model = load_model("tiny-llama", seed=2)
    items = limit_bbq(load_bbq(["Age"], data_root=data), 12, seed=0)
    vec = SteeringVector(
        {2: torch.randn(64, generator=torch.Generator().manual_seed(1))},
        VectorMetadata("tiny-llama", 64, processing={f: False for f in PROCESSING_FLAGS}),
    )
    base = run_bbq(model, items, n_boot=0).predictions
    steered = run_bbq(model, items, vector=vec, coeff=6.0, n_boot=0).predictions
    rep = steerability_report(base, steered, n_boot=100)
    assert rep["n"] == 12 and 0.0 <= rep["wrong_way_share"]["value"] <= 1.0
    assert rep["bias"]["n"] == sum(p.context_condition == "disambig" for p in base)
