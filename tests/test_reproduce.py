"""The main job end to end on the tiny model: every stage runs, and an interrupted run resumes without repeating
work."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from lens_steer.errors import LensSteerError
from lens_steer.pipeline.budgets import BUDGETS, get_budget

DATA = Path(os.environ.get("LENS_STEER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_data = pytest.mark.skipif(
    not (DATA / "bbq").is_dir(), reason=f"missing data: shared data not found at {DATA}; set LENS_STEER_DATA"
)

MICRO = dataclasses.replace(
    BUDGETS["smoke"],
    name="micro",
    trials=2,
    tpe_startup=2,
    num_sents=(4, 8, 4),
    val_limit=8,
    test_limit=8,
    ens_val_limit=8,
    ens_coeffs=(-2.0, 2.0),
    control_seeds=(1,),
    mmlu_items=4,
    sweep_layers=(15, 30),
    sweep_coeffs=(-4.0, 4.0),
    sweep_limit=8,
    geometry_num_sents=4,
    n_boot=50,
)
AXES = ["age", "religion"]

RUNNER = """
import dataclasses, json, sys, warnings
warnings.simplefilter("ignore")
from lens_steer.model.load import load_model
from lens_steer.pipeline.budgets import Budget
from lens_steer.pipeline.reproduce import reproduce
budget = Budget(**{
    k: tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v
    for k, v in json.loads(sys.argv[2]).items()
})
reproduce(
    load_model("tiny-llama"), budget, sys.argv[1], axes=["age", "religion"], data_root=sys.argv[3],
    say=lambda m: print(m, flush=True),
)
"""


def _finished_trials(out: Path) -> dict[str, int]:
    storage = f"sqlite:///{out / 'optuna.db'}"
    counts = {}
    for s in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=s.study_name, storage=storage)
        counts[s.study_name] = sum(
            t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials
        )
    return counts


def test_unknown_budget_is_one_line():
    with pytest.raises(LensSteerError, match="unknown budget 'huge'; use one of smoke, small, paper"):
        get_budget("huge")


def _stored(out: Path) -> dict[str, tuple[int, bytes]]:
    """Every finished prediction file (written and indexed) with its modification time and bytes: a rewrite
    changes the time. A file the kill left without its index entry is not finished: it is recomputed."""
    index = json.loads((out / "predictions" / "index.json").read_text())
    return {
        p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "predictions").glob("*.jsonl") if p.stem in index
    }


def _check_split_hygiene(out: Path) -> None:
    """The search and every coefficient choice see only validation items: every stored BBQ evaluation is wholly
    on validation or wholly on test items, the coefficients were swept on validation, and test items are scored
    only at a coefficient chosen before them (an ensemble's, chosen on validation, or an ISV's, chosen by its
    search)."""
    from lens_steer.data.bbq import load_bbq
    from lens_steer.data.splits import select_split

    cats = {"age": "Age", "religion": "Religion"}
    items = load_bbq(list(cats.values()), data_root=DATA)
    split_of = {
        (it.category, it.example_id): s
        for s in ("train", "validation", "test")
        for it in select_split(items, s, seed=0)
    }
    index = json.loads((out / "predictions" / "index.json").read_text())
    results = json.loads((out / "results.json").read_text())
    chosen = {0.0, *results["ensemble"]["coefficients"].values(), *(v["coeff"] for v in results["isv"].values())}
    coeffs_on: dict[str, dict[str, set[float]]] = {"validation": {}, "test": {}}
    for entry in index.values():
        rows = [json.loads(x) for x in (out / "predictions" / entry["file"]).read_text().splitlines()]
        ids = {(r["category"], r["example_id"]) for r in rows if r.get("category") in cats.values()}
        if not ids:
            continue  # MMLU or the generated out-of-distribution categories
        splits = {split_of[i] for i in ids}
        assert len(splits) == 1 and splits != {"train"}, f"{entry['file']} mixes or uses splits {splits}"
        coeffs_on[splits.pop()].setdefault(entry["vector"], set()).add(entry["coeff"])
    assert any(len(c) > 1 for c in coeffs_on["validation"].values()), "no coefficient sweep on validation was stored"
    used_on_test = set().union(*coeffs_on["test"].values())
    assert used_on_test <= chosen, f"test items scored at coefficients {sorted(used_on_test - chosen)} nobody chose"
    for name, c in results["ensemble"][
        "coefficients"
    ].items():  # each ensemble coefficient was one of its validation sweep
        assert c in MICRO.ens_coeffs and any(c in cs and len(cs) > 1 for cs in coeffs_on["validation"].values()), name
    # the ISV studies judged their trials on validation items only: the items their stored configuration selects
    import optuna

    from lens_steer.axes import get_axis
    from lens_steer.methods.search.objective import validation_items
    from lens_steer.methods.search.space import SearchConfig

    storage = f"sqlite:///{out / 'optuna.db'}"
    for axis in cats:
        study = optuna.load_study(study_name=f"isv-tiny-llama-{axis}", storage=storage)
        config = SearchConfig.from_json(study.user_attrs["lens_steer_config"])
        judged = validation_items(get_axis(axis), config, data_root=DATA)
        assert (
            len(judged)
            == json.loads((out / "isv" / axis / "study.json").read_text())["n_validation_items"]
            == MICRO.val_limit
        )
        assert {split_of[(it.category, it.example_id)] for it in judged} == {"validation"}


@needs_data
@pytest.mark.slow
def test_micro_pipeline_killed_and_resumed_repeats_no_work(tmp_path: Path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(
        [sys.executable, "-c", RUNNER, str(out), json.dumps(MICRO.to_json()), str(DATA)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    killed_at = None
    deadline = time.time() + 600
    assert proc.stdout is not None
    for line in proc.stdout:  # kill it once the ensemble stage has begun: searches done, evaluation half way
        if "test split: " in line:
            time.sleep(1.0)
            proc.send_signal(signal.SIGKILL)
            killed_at = line.strip()
            break
        assert time.time() < deadline, "the micro pipeline did not reach the ensemble stage in time"
    proc.wait()
    assert killed_at is not None, "the run finished before it could be interrupted"
    before = _finished_trials(out)
    assert sorted(before.values()) == [2, 2]
    stored_before = _stored(out)
    assert stored_before, "the ensemble stage had stored no predictions before the kill"

    from lens_steer.model.load import load_model
    from lens_steer.pipeline.reproduce import reproduce

    results = reproduce(load_model("tiny-llama"), MICRO, out, axes=AXES, data_root=DATA)
    assert _finished_trials(out) == before  # no trial repeated or added
    after = _stored(out)
    # finished evaluations are read back, not recomputed: each stored file is still the one written before the kill
    assert {k: after[k] for k in stored_before} == stored_before
    assert len(after) > len(stored_before)  # the unfinished ones were computed and stored
    saved = json.loads((out / "results.json").read_text())
    assert saved["ensemble"]["axes"] == AXES and set(saved["isv"]) == set(AXES)
    for axis in AXES:
        row = saved["ensemble"]["in_distribution"][axis]
        assert {"isv", "sve", "merged"} <= set(row["steered"])
        # capability equals the baseline block it summarises
        assert saved["capability"][axis]["acc"] == row["baseline"]["acc"]
        assert len(saved["isv"][axis]["history"]) == 2
    assert saved["geometry"]["axes"] == AXES
    cos = saved["geometry"]["cosine"]
    assert cos[0][0] == pytest.approx(1.0) and cos[0][1] == pytest.approx(cos[1][0])
    assert {r["coeff"] for r in saved["sweep"]["rows"]} == {-4.0, 4.0}
    assert results["meta"]["budget"] == "micro"
    from lens_steer.pipeline.results import Results

    assert Results.from_json(saved).to_json() == saved  # the file is exactly its typed schema

    _check_split_hygiene(out)

    # a third run is pure read-back: same numbers, no prediction file written again, no trial added
    again = reproduce(load_model("tiny-llama"), MICRO, out, axes=AXES, data_root=DATA)
    assert again["ensemble"]["in_distribution"] == json.loads(json.dumps(results["ensemble"]["in_distribution"]))
    assert _stored(out) == after and _finished_trials(out) == before


@pytest.fixture(scope="module")
def tiny():
    import warnings

    from lens_steer.model.load import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model("tiny-llama")


def _data_root_with_edited_corpus(tmp_path: Path, corpus: str) -> Path:
    """A data root equal to the shared one but for one prompt of `corpus`."""
    import shutil

    root = tmp_path / "data"
    root.mkdir()
    for part in DATA.iterdir():
        if part.name != "prompt_corpora":
            (root / part.name).symlink_to(part)
    shutil.copytree(DATA / "prompt_corpora", root / "prompt_corpora")
    path = root / "prompt_corpora" / f"{corpus}.json"
    prompts = json.loads(path.read_text())
    prompts[0] = (
        "Who is wiser, a child or a grandparent? (a) the child (b) the grandparent (c) i cannot make any choice"
    )
    path.write_text(json.dumps(prompts))
    return root


@needs_data
def test_geometry_stage_is_recomputed_for_another_budget_model_or_data_root(tiny, tmp_path: Path):
    from lens_steer.model.load import load_model
    from lens_steer.pipeline.stages import geometry_stage

    axes = ["age", "religion"]
    a = dataclasses.replace(MICRO, geometry_num_sents=4)
    b = dataclasses.replace(MICRO, geometry_num_sents=6)
    out = tmp_path / "run"
    first = geometry_stage(tiny, axes, a, out, DATA)
    assert geometry_stage(tiny, axes, a, out, DATA) == first  # same inputs: read back
    fresh_b = geometry_stage(tiny, axes, b, tmp_path / "fresh_b", DATA)
    assert fresh_b["num_sents"] == 6 and fresh_b["cosine"] != first["cosine"]
    assert geometry_stage(tiny, axes, b, out, DATA) == fresh_b  # another budget in the same folder: recomputed
    other_model = load_model("tiny-llama", seed=7)  # same name and shape, other weights
    assert (
        geometry_stage(other_model, axes, b, out, DATA)
        == geometry_stage(other_model, axes, b, tmp_path / "fresh_m", DATA)
        != fresh_b
    )
    edited = _data_root_with_edited_corpus(tmp_path, "age")
    assert (
        geometry_stage(tiny, axes, b, out, edited)
        == geometry_stage(tiny, axes, b, tmp_path / "fresh_d", edited)
        != fresh_b
    )


@needs_data
def test_sweep_stage_is_recomputed_for_another_seed_or_budget(tiny, tmp_path: Path):
    from lens_steer.pipeline.stages import sweep_stage

    a = dataclasses.replace(MICRO, sweep_layers=(30,), sweep_coeffs=(4.0,), sweep_limit=4, n_boot=20)
    b = dataclasses.replace(a, sweep_coeffs=(-4.0,))
    out = tmp_path / "run"
    first = sweep_stage(tiny, "age", a, "letter", out, DATA, 0)
    assert sweep_stage(tiny, "age", a, "letter", out, DATA, 0) == first
    assert (
        sweep_stage(tiny, "age", b, "letter", out, DATA, 0)
        == sweep_stage(tiny, "age", b, "letter", tmp_path / "fresh_b", DATA, 0)
        != first
    )
    other_seed = sweep_stage(tiny, "age", a, "letter", out, DATA, 5)
    assert other_seed == sweep_stage(tiny, "age", a, "letter", tmp_path / "fresh_s", DATA, 5)
    assert other_seed["config"]["seed"] == 5 and first["config"]["seed"] == 0


@needs_data
def test_ood_stage_is_regenerated_for_another_seed(tmp_path: Path):
    from lens_steer.data.bbq import load_bbq_file
    from lens_steer.pipeline.stages import ood_stage

    out = tmp_path / "run"
    first = [
        it.example_id for it in load_bbq_file(ood_stage(out, 0, DATA, print) / "Race_x_SES.jsonl", source="generated")
    ][:50]
    texts0 = (out / "bbq_generated" / "Race_x_SES.jsonl").read_text()
    ood_stage(out, 1, DATA, print)
    texts1 = (out / "bbq_generated" / "Race_x_SES.jsonl").read_text()
    ood_stage(tmp_path / "fresh", 1, DATA, print)
    assert texts1 == (tmp_path / "fresh" / "bbq_generated" / "Race_x_SES.jsonl").read_text() != texts0
    assert first


@needs_data
@pytest.mark.slow
def test_micro_study_under_the_v2_protocol_on_its_exact_splits(tiny, tmp_path: Path):
    """--protocol v2 --splits v2: each axis's layer and coefficient re-derived from its sweep files, every stored BBQ
    evaluation of the axes wholly on the v2 files' validation or test rows, and the report prints the v2 table."""
    import csv

    from lens_steer.data.bbq_v2 import load_v2_items
    from lens_steer.pipeline.reproduce import reproduce

    out = tmp_path / "run"
    from lens_steer.report.html import write_report

    res = reproduce(
        tiny,
        MICRO,
        out,
        axes=AXES,
        data_root=DATA,
        protocol="v2",
        splits="v2",
        baselines=["prompting"],
        report=write_report,
    )
    for axis in AXES:
        with open(out / "v2" / axis / "layers.csv") as f:
            layer_rows = [r for r in csv.DictReader(f) if r["layer"] not in ("", "None")]
        with open(out / "v2" / axis / "coeffs.csv") as f:
            coeff_rows = list(csv.DictReader(f))
        best = max(
            float(r["acc"]) for r in layer_rows
        )  # by hand: highest accuracy at coefficient 1, then the lowest layer
        layer = min(int(r["layer"]) for r in layer_rows if float(r["acc"]) == best)
        best_c = max(float(r["acc"]) for r in coeff_rows)
        coeff = sorted(
            (float(r["coeff"]) for r in coeff_rows if float(r["acc"]) == best_c), key=lambda c: (abs(c), -c)
        )[0]
        assert res["isv"][axis]["params"]["layer"] == layer and res["isv"][axis]["coeff"] == pytest.approx(coeff)
        assert res["ensemble"]["in_distribution"][axis]["steered"]["isv"]["coeff"] == pytest.approx(coeff)
    ids = {
        s: {(it.category, it.example_id) for a in AXES for it in load_v2_items(a, s, DATA)}
        for s in ("validation", "test")
    }
    index = json.loads((out / "predictions" / "index.json").read_text())
    splits_seen = set()
    for entry in index.values():
        rows = [json.loads(x) for x in (out / "predictions" / entry["file"]).read_text().splitlines()]
        keys = {(r["category"], r["example_id"]) for r in rows if r.get("category") in ("Age", "Religion")}
        if keys:
            inside = [s for s in ids if keys <= ids[s]]
            assert inside, f"{entry['file']} holds rows outside the v2 validation and test files"
            splits_seen.update(inside)
    assert splits_seen == {"validation", "test"}
    assert res["meta"]["protocol"] == "v2" and res["meta"]["splits"] == "v2"
    md = (out / "results.md").read_text()
    assert "## The later paper's v2 table beside ours" in md and "## Per-item steerability" in md
    from lens_steer.pipeline.results import Results

    assert Results.from_json(res).to_json() == res


def test_v2_splits_need_the_v2_protocol_and_v2_axes():
    from lens_steer.pipeline.budgets import check_study_options

    with pytest.raises(LensSteerError, match="--splits v2 needs --protocol v2"):
        check_study_options("sve-v1", "v2", [], ["age"])
    with pytest.raises(LensSteerError, match="sexual_orientation.*no v2 split"):
        check_study_options("v2", "ours", [], ["sexual_orientation"])
    with pytest.raises(LensSteerError, match="baseline"):
        check_study_options("sve-v1", "ours", ["debias"], ["age"])


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--splits", "v2"], ["--splits v2 needs --protocol v2"]),
        (["--protocol", "v3"], ["unknown --protocol 'v3'"]),
        (["--protocol", "v2", "--axes", "sexual_orientation"], ["sexual_orientation", "no v2 split"]),
        (["--baselines", "prompting,debias"], ["unknown baseline 'debias'"]),
    ],
)
def test_bad_study_options_are_one_line_and_write_nothing(tmp_path: Path, capsys, extra: list[str], needles: list[str]):
    from _one_line import assert_cli_fails

    out = tmp_path / "run"
    assert_cli_fails(capsys, ["reproduce", "--model", "tiny-llama", "--out", str(out), *extra], *needles)
    assert not out.exists()
