"""Tests for lens_steer.methods.ensemble: SVE arithmetic, merged baseline, random controls, ISV loading, evaluation."""

from __future__ import annotations

import csv
import dataclasses
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from lens_steer.data.root import resolve_data_root
from lens_steer.errors import LensSteerError, StudyError
from lens_steer.extract.activations import pair_activations
from lens_steer.extract.pairs import persona_pairs
from lens_steer.methods.ensemble import build_ensembles, loo_ensembles, merged_vector, random_control
from lens_steer.methods.isv import Isv
from lens_steer.pipeline.evaluate import best_coeff, evaluate_ensembles
from lens_steer.pipeline.evaluation_config import EnsembleConfig
from lens_steer.steering.vectors import SteeringVector, VectorMetadata


def _data_ok() -> bool:
    try:
        root = resolve_data_root()
    except LensSteerError:
        return False
    return (root / "prompt_corpora" / "age.json").is_file() and (root / "bbq" / "data" / "Age.jsonl").is_file()


needs_data = pytest.mark.skipif(not _data_ok(), reason="missing data: shared data (prompt_corpora, bbq) not found")


def _vec(dirs: dict[int, list[float]], model: str = "m", **prov) -> SteeringVector:
    d = len(next(iter(dirs.values())))
    return SteeringVector(
        {k: torch.tensor(v) for k, v in dirs.items()}, VectorMetadata(model_name=model, d_model=d, provenance=prov)
    )


def test_sve_of_identical_vectors_is_that_vector() -> None:
    v = _vec({3: [0.6, 0.8, 0.0], 5: [0.0, 0.0, 1.0]})
    ens = build_ensembles([Isv("age", v, 1.5), Isv("religion", v, 1.5), Isv("ses", v, 1.5)])
    for name in ("sve", "sve_norm"):
        assert ens[name].layers == (3, 5)
        assert all(torch.allclose(ens[name].directions[k], v.directions[k]) for k in (3, 5))
    assert all(torch.allclose(ens["sve_weighted"].directions[k], 1.5 * v.directions[k]) for k in (3, 5))


def test_sve_by_hand_with_different_layers() -> None:
    a = _vec({1: [1.0, 0.0], 2: [0.0, 2.0]})
    b = _vec({1: [0.0, 1.0]})
    ens = build_ensembles([Isv("age", a, 2.0), Isv("ses", b, -1.0)])
    # mean: layer 1 = (a + b) / 2, layer 2 = a / 2 (b counts as zero there)
    assert torch.allclose(ens["sve"].directions[1], torch.tensor([0.5, 0.5]))
    assert torch.allclose(ens["sve"].directions[2], torch.tensor([0.0, 1.0]))
    # norm-matched: layer 1 rescaled to mean(|a1|, |b1|) = 1; layer 2 to |a2| = 2 (only a has it)
    assert torch.allclose(ens["sve_norm"].directions[1], torch.tensor([0.5, 0.5]) / (0.5**0.5))
    assert torch.allclose(ens["sve_norm"].directions[2], torch.tensor([0.0, 2.0]))
    # coefficient-weighted mean of applied deltas: (2a - b) / 2
    assert torch.allclose(ens["sve_weighted"].directions[1], torch.tensor([1.0, -0.5]))
    loo = loo_ensembles([Isv("age", a, 2.0), Isv("ses", b, -1.0)])
    assert torch.allclose(loo["age"].directions[1], b.directions[1]) and loo["age"].layers == (1,)


def test_random_control_matches_norms_and_layers() -> None:
    g = torch.Generator().manual_seed(0)
    v = SteeringVector(
        {4: torch.randn(256, generator=g) * 3, 7: torch.randn(256, generator=g)},
        VectorMetadata(model_name="m", d_model=256),
    )
    c1, c1b, c2 = random_control(v, 1), random_control(v, 1), random_control(v, 2)
    assert c1.layers == v.layers
    for k in v.layers:
        assert float(c1.directions[k].norm()) == pytest.approx(float(v.directions[k].norm()), rel=1e-5)
        assert torch.equal(c1.directions[k], c1b.directions[k]) and not torch.equal(c1.directions[k], c2.directions[k])
        cos = float(torch.nn.functional.cosine_similarity(c1.directions[k], v.directions[k], dim=0))
        assert abs(cos) < 0.3  # random directions in 256 dims are nearly orthogonal (sd ~ 0.06)


def test_best_coeff_and_config_errors() -> None:
    rows = [
        {"coeff": -1.0, "by_axis": {"a": 0.5, "b": 0.9}},
        {"coeff": 1.0, "by_axis": {"a": 0.8, "b": 0.4}},
        {"coeff": 0.0, "by_axis": {"a": 0.8, "b": 0.4}},
    ]
    assert best_coeff(rows) == -1.0  # mean 0.7 vs 0.6
    assert best_coeff(rows, exclude="b") == 0.0  # 0.8 tie between 1 and 0 -> smaller |coeff|
    with pytest.raises(StudyError, match="kinds"):
        EnsembleConfig(kinds=("nope",))
    with pytest.raises(StudyError, match="coeffs"):
        EnsembleConfig(coeffs=())


@pytest.fixture(scope="module")
def tiny():
    from lens_steer.model.load import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model("tiny-llama")


def _isv(model, axis: str, corpus: str, n: int, persona: int, layers: tuple[int, ...], coeff: float) -> Isv:
    from lens_steer.methods.isv import trial_params_vector

    params = {
        "corpus": corpus,
        "num_sents": n,
        "persona": persona,
        "template": 0,
        "layers": ",".join(map(str, layers)),
        "method": "pca_diff",
        "coeff": coeff,
    }
    v = trial_params_vector(model, params)
    meta = dataclasses.replace(
        v.metadata, provenance={**v.metadata.provenance, "axis": axis, "coeff": coeff, "params": params}
    )
    return Isv(axis, SteeringVector(dict(v.directions), meta), coeff)


@needs_data
def test_merged_baseline_equals_pca_on_concatenated_pairs(tiny) -> None:
    a = _isv(tiny, "age", "age", 5, 0, (1,), 1.0)
    b = _isv(tiny, "religion", "religion", 4, 2, (1, 2), -1.0)
    merged = merged_vector(tiny, [a, b])
    assert merged.layers == (1, 2)
    # by hand: activations of each set, rows stacked, first principal component of the differences
    acts = [
        pair_activations(tiny, persona_pairs(c, n, p, 0, tokenizer=tiny.tokenizer), (1, 2))
        for c, n, p in (("age", 5, 0), ("religion", 4, 2))
    ]
    for layer in (1, 2):
        diff = torch.cat([x.positive[layer] - x.negative[layer] for x in acts]).double()
        _, _, v = torch.linalg.svd(diff - diff.mean(0), full_matrices=False)
        pc = v[0].float()
        got = merged.directions[layer]
        # contrast scale: the norm of the mean difference of the concatenated pairs
        assert float(got.norm()) == pytest.approx(float(diff.mean(0).norm()), rel=1e-4)
        got = got / got.norm()
        assert abs(float(got @ pc)) == pytest.approx(1.0, abs=1e-4)
        assert float((diff.float() @ got > 0).sum()) >= float((diff.float() @ got < 0).sum())


@needs_data
def test_the_axes_are_judged_on_the_bbq_source_the_search_used(tiny, tmp_path: Path) -> None:
    from lens_steer.data.select import select

    gen = tmp_path / "generated"
    gen.mkdir()
    for cat in ("Age", "Religion"):  # a shorter file of the same rows, read as generated ones
        rows = (resolve_data_root() / "bbq" / "data" / f"{cat}.jsonl").read_text().splitlines()[:48]
        (gen / f"{cat}.jsonl").write_text("\n".join(rows) + "\n")
    isvs = [_isv(tiny, "age", "age", 4, 0, (1,), 1.0), _isv(tiny, "religion", "religion", 4, 2, (2,), -1.0)]
    cfg = EnsembleConfig(
        coeffs=(1.0,),
        kinds=("sve",),
        val_limit=1,
        test_limit=None,
        scoring="letter",
        n_boot=0,
        control_seeds=(),
        mmlu_items=0,
        ood=False,
        bbq_source="generated",
        generated_dir=str(gen),
    )
    res = evaluate_ensembles(tiny, isvs, cfg, tmp_path / "out")
    for axis in ("age", "religion"):
        expected = select(axis, "test", None, source="generated", generated_dir=gen)
        assert res["in_distribution"][axis]["n"] == len(expected) < len(select(axis, "test", None))


@needs_data
def test_evaluate_ensembles_small_run(tiny, tmp_path: Path) -> None:
    isvs = [_isv(tiny, "age", "age", 4, 0, (1,), 1.0), _isv(tiny, "religion", "religion", 4, 2, (2,), -1.0)]
    cfg = EnsembleConfig(
        coeffs=(0.0, 2.0),
        kinds=("sve",),
        val_limit=1,
        test_limit=1,
        scoring="letter",
        n_boot=20,
        control_seeds=(1,),
        mmlu_items=1,
        ood=False,
    )
    res = evaluate_ensembles(tiny, isvs, cfg, tmp_path)
    saved = json.loads((tmp_path / "ensemble.json").read_text())
    assert saved["coefficients"] == res["coefficients"]
    rows = saved["sweeps"]["sve"]["rows"]
    means = {r["coeff"]: sum(r["by_axis"].values()) / 2 for r in rows}
    best = max(means.values())
    assert means[saved["coefficients"]["sve"]] == best
    for axis in ("age", "religion"):
        block = saved["in_distribution"][axis]
        assert set(block["steered"]) == {"isv", "sve", "merged", "sve_loo"}
        isv_entry = block["steered"]["isv"]
        assert isv_entry["coeff"] == (1.0 if axis == "age" else -1.0)
        assert len(isv_entry["controls"]) == 1
        base_acc = block["baseline"]["acc"]["value"]
        assert isv_entry["vs_base"]["overall"]["acc"]["base"]["value"] == pytest.approx(base_acc)
        # the direct paired tests agree with the two runs' accuracies against the baseline
        sve_acc = block["steered"]["sve"]["vs_base"]["overall"]["acc"]["steered"]["value"]
        isv_acc = isv_entry["vs_base"]["overall"]["acc"]["steered"]["value"]
        merged_acc = block["steered"]["merged"]["vs_base"]["overall"]["acc"]["steered"]["value"]
        assert block["steered"]["sve"]["vs_isv"]["overall"]["acc"]["diff"]["value"] == pytest.approx(sve_acc - isv_acc)
        assert block["steered"]["merged"]["vs_sve"]["overall"]["acc"]["diff"]["value"] == pytest.approx(
            merged_acc - sve_acc
        )
    with open(tmp_path / "results.csv") as f:
        table = list(csv.DictReader(f))
    # per axis: baseline + 4 steered + 4 controls; MMLU: baseline + (2 ISV + sve + merged) x (1 + 1 control)
    assert len(table) == 2 * 9 + 1 + 4 * 2
    assert (tmp_path / "sve.safetensors").is_file() and (tmp_path / "loo" / "sve-without-age.safetensors").is_file()


@needs_data
def test_a_second_run_reads_every_evaluation_back_from_the_store(tiny, tmp_path: Path) -> None:
    isvs = [_isv(tiny, "age", "age", 4, 0, (1,), 1.0), _isv(tiny, "religion", "religion", 4, 2, (2,), -1.0)]
    cfg = EnsembleConfig(
        coeffs=(2.0,),
        kinds=("sve",),
        val_limit=1,
        test_limit=1,
        scoring="letter",
        n_boot=20,
        control_seeds=(1,),
        mmlu_items=2,
        ood=False,
        store_dir=str(tmp_path / "run"),
    )
    first = evaluate_ensembles(tiny, isvs, cfg, tmp_path / "a")
    stored = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "run" / "predictions").glob("*.jsonl")}
    index = json.loads((tmp_path / "run" / "predictions" / "index.json").read_text())
    mmlu_entries = [e for e in index.values() if e.get("benchmark") == "mmlu"]
    assert len(mmlu_entries) == 1 + (2 + 2) * 2  # baseline + (2 ISVs + sve + merged) x (steered, control)
    second = evaluate_ensembles(tiny, isvs, cfg, tmp_path / "b")
    assert {
        p.name: p.stat().st_mtime_ns for p in (tmp_path / "run" / "predictions").glob("*.jsonl")
    } == stored  # nothing rewritten
    assert second["mmlu"] == first["mmlu"] and second["in_distribution"] == first["in_distribution"]


def _store_rows(run: Path, **match: object) -> list[list[dict]]:
    """The stored prediction files whose index entry has every `match` field (None: absent), as row lists."""
    index = json.loads((run / "predictions" / "index.json").read_text())
    return [
        [json.loads(line) for line in (run / "predictions" / e["file"]).read_text().splitlines() if line.strip()]
        for e in index.values()
        if all(e.get(k) == v for k, v in match.items())
    ]


@needs_data
def test_baselines_are_judged_beside_the_vectors_from_their_stored_predictions(tiny, tmp_path: Path) -> None:
    from lens_steer.data.select import select
    from lens_steer.methods.baselines.prompting import baseline_bbq_scores
    from lens_steer.methods.steerability import correct_margin
    from lens_steer.tasks.store import PredictionStore

    isvs = [_isv(tiny, "age", "age", 4, 0, (1,), 1.0), _isv(tiny, "religion", "religion", 4, 2, (2,), -1.0)]
    run = tmp_path / "run"
    cfg = EnsembleConfig(
        coeffs=(-2.0, 2.0),
        kinds=("sve",),
        val_limit=1,
        test_limit=1,
        scoring="letter",
        n_boot=20,
        control_seeds=(1,),
        mmlu_items=2,
        ood=False,
        store_dir=str(run),
        baselines=("prompting", "self-debias-schick"),
    )
    res = evaluate_ensembles(tiny, isvs, cfg, tmp_path / "a")
    for axis in ("age", "religion"):
        test = select(axis, "test", 1)
        block = res["in_distribution"][axis]
        for name in ("prompting", "self-debias-schick"):
            entry = block["steered"][name]
            assert entry["controls"] == [] and entry["coeff"] == 0.0
            acc = entry["vs_base"]["overall"]["acc"]["steered"]["value"]
            # recomputed two other ways: from the stored predictions file, and by scoring the items again directly
            (rows,) = _store_rows(run, baseline=name, benchmark=None, categories=[test[0].category])
            assert acc == pytest.approx(sum(r["pred"] == r["label"] for r in rows) / len(rows))
            direct = baseline_bbq_scores(tiny, test, name, scoring="letter")[2]
            assert [p.pred for p in direct] == [r["pred"] for r in rows]
            sve_acc = block["steered"]["sve"]["vs_base"]["overall"]["acc"]["steered"]["value"]
            assert entry["vs_sve"]["overall"]["acc"]["diff"]["value"] == pytest.approx(acc - sve_acc)
        # the ISV's wrong-way share, recomputed from the per-item margins file and from the stored
        # predictions' log-probabilities
        st = block["steered"]["isv"]["steerability"]
        items = [json.loads(line) for line in (tmp_path / "a" / st["items_file"]).read_text().splitlines()]
        assert st["wrong_way_share"]["value"] == pytest.approx(
            sum(i["steered"] - i["base"] < 0 for i in items) / len(items)
        )
        store = PredictionStore(run)
        from lens_steer.model.fingerprint import model_fingerprint
        from lens_steer.model.load import model_identity

        keyed = {
            "model": model_identity(tiny).name,
            "model_fingerprint": model_fingerprint(tiny),
            "scoring": "letter",
            "prompt_format": "reference",
        }
        never = lambda: pytest.fail("the run stored these predictions")  # noqa: E731
        base = store.bbq(test, None, 0.0, keyed, never)
        steered = store.bbq(
            test, isvs[0 if axis == "age" else 1].vector, isvs[0 if axis == "age" else 1].coeff, keyed, never
        )
        by_hand = [correct_margin(s) - correct_margin(b) for b, s in zip(base, steered)]
        assert [i["delta"] for i in items] == pytest.approx(by_hand)
        assert st["n"] == len(test) and sum(st["histogram"]["counts"]) == len(test)
        # the SVE's per-item slopes over its validation sweep, by np.polyfit on the stored validation predictions
        val = select(axis, "validation", 1)
        sve = build_ensembles(isvs)["sve"]
        margins = np.array([[correct_margin(p) for p in store.bbq(val, sve, c, keyed, never)] for c in (-2.0, 2.0)])
        slopes = np.polyfit([-2.0, 2.0], margins, 1)[0]
        got = res["sweeps"]["sve"]["slopes"][axis]
        assert got["n"] == len(val) and got["mean"]["value"] == pytest.approx(float(slopes.mean()))
        assert got["anti_steerable_share"]["value"] == pytest.approx(float((slopes < 0).mean()))
    mm = res["mmlu"]["steered"]
    (rows,) = _store_rows(run, baseline="prompting", benchmark="mmlu")
    assert mm["prompting"]["acc"]["value"] == pytest.approx(sum(r["correct"] for r in rows) / len(rows))
    assert "reference prompt format" in mm["self-debias-schick"]["note"]
    stored = {p.name: p.stat().st_mtime_ns for p in (run / "predictions").glob("*.jsonl")}
    again = evaluate_ensembles(tiny, isvs, cfg, tmp_path / "b")
    assert {
        p.name: p.stat().st_mtime_ns for p in (run / "predictions").glob("*.jsonl")
    } == stored  # the baselines were read back, not rescored
    assert (
        again["in_distribution"]["age"]["steered"]["prompting"] == res["in_distribution"]["age"]["steered"]["prompting"]
    )


@needs_data
def test_ensemble_command_refuses_an_unknown_baseline_in_one_line(tiny, tmp_path: Path, capsys) -> None:
    from _one_line import assert_cli_fails

    path = tmp_path / "age" / "isv.safetensors"
    _isv(tiny, "age", "age", 4, 0, (1,), 1.0).vector.save(path)
    out = tmp_path / "out"
    assert_cli_fails(
        capsys,
        ["ensemble", "--model", "tiny-llama", "--isv", str(path), "--out", str(out), "--baselines", "prompting,debias"],
        "baselines must be drawn from",
        "debias",
    )
    assert not out.exists()
