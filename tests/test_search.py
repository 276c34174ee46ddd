"""Tests for lens_steer.search: space/config data, storage and study semantics, workers, kill/resume,
the activation cache and the BBQ objective on the tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import optuna
import pytest
import torch

from lens_steer.data.root import resolve_data_root
from lens_steer.errors import LensSteerError, StudyError
from lens_steer.extract import pair_activations, vector_from_activations
from lens_steer.pairs import persona_pairs
from lens_steer.search import (
    ActivationCache,
    IsvObjective,
    SearchConfig,
    SearchSpace,
    layer_label,
    objective_value,
    open_storage,
    open_study,
    parse_layer_spec,
    redact_url,
    run_isv_search,
    run_trials,
    trial_params_vector,
)
from lens_steer.vectors import load_vector

REPO = Path(__file__).resolve().parents[1]
optuna.logging.set_verbosity(optuna.logging.ERROR)


def _data_ok() -> bool:
    try:
        root = resolve_data_root()
    except LensSteerError:
        return False
    return (root / "prompt_corpora" / "age.json").is_file() and (root / "bbq").is_dir()


needs_data = pytest.mark.skipif(not _data_ok(), reason="missing data: shared data (prompt_corpora, bbq) not found")

SMALL = SearchSpace(
    corpora=("age", "race", "gender"),
    num_sents=(100, 500, 50),
    personas=(0, 1, 2),
    templates=(0,),
    coeff=(-2.0, 2.0, 0.2),
    layers=((1,), (2,), (1, 2)),
    methods=("pca_diff",),
)


# ----------------------------------------------------------------------------- space and config
def test_space_json_round_trip_and_labels() -> None:
    back = SearchSpace.from_json(json.loads(json.dumps(SMALL.to_json())))
    assert back == SMALL
    assert [layer_label(c) for c in ((3,), (4, 5, 6), (1, 3))] == ["3", "4-6", "1,3"]
    assert parse_layer_spec("4-6") == (4, 5, 6) and parse_layer_spec([3, 1]) == (1, 3) and parse_layer_spec(7) == (7,)
    cfg = SearchConfig(space=SMALL, objective="bias", limit=None)
    assert SearchConfig.from_json(json.loads(json.dumps(cfg.to_json()))) == cfg
    assert cfg.fingerprint() == SearchConfig.from_json(cfg.to_json()).fingerprint()
    assert cfg.fingerprint() != SearchConfig(space=SMALL, objective="acc", limit=None).fingerprint()


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"num_sents": (300, 200, 50)}, "num_sents range is empty"),
        ({"coeff": (1.0, -1.0, 0.2)}, "coeff range is empty"),
        ({"coeff": (-1.0, 1.0, 0.3)}, "whole number of steps"),
        ({"corpora": ()}, "corpora is empty"),
        ({"personas": (12,)}, "out of range"),
        ({"layers": ()}, "layers is empty"),
        ({"methods": ("nope",)}, "unknown"),
        ({"corpora": ("klingon",)}, "unknown corpus"),
    ],
)
def test_space_bad_input_is_one_line(kwargs: dict, needle: str) -> None:
    with pytest.raises(StudyError) as e:
        SearchSpace(**kwargs)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_space_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "space.json"
    bad.write_text('{"coeff": [1, 0, 0.5]}')
    with pytest.raises(StudyError, match=r"space\.json: coeff range is empty"):
        SearchSpace.load(bad)
    bad.write_text('{\n "coeff": [1, 0,\n}')
    with pytest.raises(StudyError, match=r"space\.json:3: invalid JSON"):
        SearchSpace.load(bad)
    bad.write_text('{"layer": [1]}')
    with pytest.raises(StudyError, match="unknown key 'layer'"):
        SearchSpace.load(bad)


def test_objective_values_by_hand() -> None:
    m = {"acc": 0.6, "acc_ambig": 0.5, "acc_disambig": 0.7, "bias_ambig": -0.2, "bias_disambig": 0.1}
    base = {"acc_disambig": 0.8}
    assert objective_value(m, SearchConfig(objective="acc")) == 0.6
    assert objective_value(m, SearchConfig(objective="bias")) == pytest.approx(-0.15)
    # floor 0.8 - 0.02 = 0.78, shortfall 0.08, penalty 10 -> 0.5 - 0.8
    assert objective_value(m, SearchConfig(objective="ambig_guarded"), base) == pytest.approx(0.5 - 0.8)
    assert objective_value(m, SearchConfig(objective="ambig_guarded", ambig_tolerance=0.2), base) == pytest.approx(0.5)


# ----------------------------------------------------------------------------- optimisation machinery
def test_search_finds_known_optimum() -> None:
    study, _ = open_study(open_storage(None), "known", config=SearchConfig(space=SMALL))

    def f(p: dict, trial: optuna.Trial) -> float:
        return -((p["coeff"] - 1.2) ** 2) - ((p["num_sents"] - 300) / 200) ** 2 + (p["corpus"] == "race") + 0.5 * (p["layers"] == "1-2")

    run_trials(study, f, SMALL, 60, seed=3)
    best = study.best_params
    assert best["corpus"] == "race" and best["layers"] == "1-2"
    assert abs(best["coeff"] - 1.2) <= 0.41 and abs(best["num_sents"] - 300) <= 100
    finished = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(finished) == 60


def test_resume_missing_study_leaves_storage_untouched(tmp_path: Path) -> None:
    db = tmp_path / "optuna.db"
    url = f"sqlite:///{db}"
    from lens_steer.models import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model("tiny-llama")
    with pytest.raises(StudyError, match="storage .* does not exist"):
        run_isv_search(model, "age", None, tmp_path / "run", storage=url, resume=True)
    assert not db.exists()
    store = open_storage(url)
    open_study(store, "other", config=SearchConfig(space=SMALL))
    with pytest.raises(StudyError, match=r"cannot resume study 'missing': not found .* holds other"):
        open_study(store, "missing", resume=True, storage_label=url)
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["other"]
    # joining with a different configuration is refused, the stored one is kept
    with pytest.raises(StudyError, match="different configuration .*objective"):
        open_study(store, "other", config=SearchConfig(space=SMALL, objective="bias"))
    assert optuna.load_study(study_name="other", storage=url).user_attrs["lens_steer_config"]["objective"] == "acc"
    # resume uses the stored configuration with a new budget
    _, used = open_study(store, "other", config=SearchConfig(space=SMALL, n_trials=7), resume=True)
    assert used is not None and used.n_trials == 7


def test_bad_storage_urls_are_one_line_and_redacted(tmp_path: Path) -> None:
    with pytest.raises(StudyError) as e:
        open_storage("postgresql://alice:s3cret@127.0.0.1:1/db")
    msg = str(e.value)
    assert "s3cret" not in msg and "alice:***@" in msg and "\n" not in msg
    with pytest.raises(StudyError, match="folder .* does not exist"):
        open_storage(f"sqlite:///{tmp_path}/nope/optuna.db")
    with pytest.raises(StudyError, match="cannot open storage nonsense://x"):
        open_storage("nonsense://x")
    assert redact_url("mysql://u:p@h/db") == "mysql://u:***@h/db"


_WORKER = textwrap.dedent(
    """
    import sys, time, pathlib, optuna
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    from lens_steer.search import SearchSpace, SearchConfig, open_storage, open_study, run_trials
    url, marks, name, resume, sleep = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3], sys.argv[4] == "1", float(sys.argv[5])
    space = SearchSpace(corpora=("age",), num_sents=(2, 10, 1), personas=(0,), templates=(0,), coeff=(-2, 2, 0.5), layers=((1,),), methods=("mean_diff",))
    cfg = SearchConfig(space=space, n_trials=int(sys.argv[6]))
    study, used = open_study(open_storage(url, heartbeat_interval=1, grace_period=2), "s", config=cfg, resume=resume)
    barrier = sys.argv[7].split(",") if len(sys.argv) > 7 else []
    def objective(p, trial):
        (marks / f"start-{trial.number}").touch()
        (marks / f"worker-{name}").touch()
        deadline = time.time() + 60
        while not all((marks / f"worker-{w}").exists() for w in barrier) and time.time() < deadline:
            time.sleep(0.02)  # the first trials wait until every worker of the barrier is inside a trial
        time.sleep(sleep)
        with open(marks / f"ran-{name}.txt", "a") as f:
            f.write(f"{trial.number}\\n")
        return p["coeff"] + p["num_sents"] / 10
    run_trials(study, objective, space, used.n_trials, seed=0, poll_seconds=0.2)
    """
)


def _worker(url: str, marks: Path, name: str, resume: bool, sleep: float, n: int, barrier: str = "") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-c", _WORKER, url, str(marks), name, "1" if resume else "0", str(sleep), str(n)] + ([barrier] if barrier else [])
    return subprocess.Popen(argv, cwd=REPO, env=env, stderr=subprocess.PIPE)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    end = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"worker exited early: {proc.stderr.read().decode()[-2000:] if proc.stderr else ''}")
        if time.time() > end:
            proc.kill()
            raise AssertionError(f"{path.name} never appeared")
        time.sleep(0.05)


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_sigkill_mid_trial_then_resume_keeps_completed_trials(tmp_path: Path, kind: str) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'journal.log'}"
    load = (lambda: url) if kind == "sqlite" else (lambda: _journal(tmp_path / "journal.log"))
    proc = _worker(url, tmp_path, "a", False, 0.6, 6)
    _wait_for(tmp_path / "start-3", proc)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = optuna.load_study(study_name="s", storage=load()).get_trials()
    done = {t.number: t.value for t in before if t.state == optuna.trial.TrialState.COMPLETE}
    killed = [t for t in before if t.state == optuna.trial.TrialState.RUNNING]
    assert sorted(done) == [0, 1, 2] and [t.number for t in killed] == [3]

    resumed = _worker(url, tmp_path, "b", True, 0.2, 6)
    assert resumed.wait(timeout=120) == 0, resumed.stderr.read().decode()[-2000:] if resumed.stderr else ""
    after = optuna.load_study(study_name="s", storage=load()).get_trials()
    complete = {t.number: t for t in after if t.state == optuna.trial.TrialState.COMPLETE}
    assert len(complete) == 6
    for number, value in done.items():
        assert complete[number].value == value
    by_number = {t.number: t for t in after}
    assert by_number[3].state == optuna.trial.TrialState.FAIL
    retries = [t for t in complete.values() if t.system_attrs.get("failed_trial") == 3]
    assert len(retries) == 1 and retries[0].params == killed[0].params


def _journal(path: Path) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(path)))


def test_two_workers_share_one_journal_study(tmp_path: Path) -> None:
    url = f"journal:{tmp_path / 'journal.log'}"
    # each worker's first trial waits until the other is inside a trial too: both take part however late one starts
    a = _worker(url, tmp_path, "a", False, 0.3, 8, barrier="a,b")
    b = _worker(url, tmp_path, "b", False, 0.3, 8, barrier="a,b")
    for p in (a, b):
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()[-2000:] if p.stderr else ""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    study = optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(tmp_path / "journal.log"))))
    complete = {t.number for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE}
    ran_a = [int(x) for x in (tmp_path / "ran-a.txt").read_text().split()]
    ran_b = [int(x) for x in (tmp_path / "ran-b.txt").read_text().split()]
    assert len(complete) == 8
    assert ran_a and ran_b and not set(ran_a) & set(ran_b)
    assert set(ran_a) | set(ran_b) == complete


# ----------------------------------------------------------------------------- the model side
@pytest.fixture(scope="module")
def tiny():
    from lens_steer.models import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model("tiny-llama")


@needs_data
def test_cached_activations_equal_fresh_extraction(tiny, tmp_path: Path) -> None:
    cache = ActivationCache(tiny, (1, 2), disk_dir=tmp_path / "cache")
    small = cache.get("age", 4, 1, 0)
    grown = cache.get("age", 9, 1, 0)  # reads only pairs 4..8 and appends
    again = cache.get("age", 6, 1, 0)  # a slice, no model call
    assert (cache.misses, cache.hits, cache.pairs_read) == (2, 1, 9)
    fresh = pair_activations(tiny, persona_pairs("age", 9, 1, 0, tokenizer=tiny.tokenizer), (1, 2))
    for layer in (1, 2):
        assert torch.allclose(grown.positive[layer], fresh.positive[layer], atol=1e-5)
        assert torch.allclose(small.negative[layer], fresh.negative[layer][:4], atol=1e-5)
        assert torch.allclose(again.positive[layer], fresh.positive[layer][:6], atol=1e-5)
    for method in ("pca_diff", "mean_diff"):
        a = vector_from_activations(grown, method, [1, 2]).directions
        b = vector_from_activations(fresh, method, [1, 2]).directions
        assert all(torch.allclose(a[k], b[k], atol=1e-4) for k in (1, 2))
    assert again.provenance["num_sents"] == 6 and again.provenance["n_pairs"] == 6
    disk = ActivationCache(tiny, (1, 2), disk_dir=tmp_path / "cache")
    from_disk = disk.get("age", 9, 1, 0)
    assert disk.pairs_read == 0 and torch.equal(from_disk.positive[2], grown.positive[2])


@needs_data
@pytest.mark.parametrize("scoring", ["cloze", "letter"])
def test_objective_reusing_the_prefix_equals_full_forwards(tiny, scoring: str) -> None:
    from lens_steer.axes import get_axis

    space = SearchSpace(corpora=("age",), num_sents=(4, 4, 4), personas=(0, 1), templates=(0,), coeff=(-3.0, 3.0, 1.0), layers=((1,), (2, 3), (3,)), methods=("mean_diff",))
    cfg = SearchConfig(space=space, n_trials=1, limit=8, chunk_size=4, scoring=scoring)
    cached = IsvObjective(tiny, get_axis("age"), cfg)
    plain = IsvObjective(tiny, get_axis("age"), cfg, items=cached.items, prefix_bytes=0)
    assert plain.prefix is None and cached.prefix is not None and cached.prefix.layers == (1, 2, 3)
    trials = [{"corpus": "age", "num_sents": 4, "persona": p, "template": 0, "coeff": c, "layers": lay, "method": "mean_diff"} for p, c, lay in [(0, 3.0, "2,3"), (1, -3.0, "3"), (0, 2.0, "1"), (1, 3.0, "2,3")]]
    for params in trials:
        fast = cached.predictions(cached.items, cached.vector(params), float(params["coeff"]))
        slow = plain.predictions(plain.items, plain.vector(params), float(params["coeff"]))
        assert [p.pred for p in fast] == [p.pred for p in slow]
        assert all(torch.allclose(torch.tensor(a.option_logprobs), torch.tensor(b.option_logprobs), atol=1e-4) for a, b in zip(fast, slow))
    assert cached.prefix.hits > 0  # later trials resumed from stored residuals


@needs_data
def test_bbq_search_end_to_end_on_tiny_model(tiny, tmp_path: Path) -> None:
    space = SearchSpace(corpora=("age",), num_sents=(4, 8, 4), personas=(0, 1), templates=(0,), coeff=(-1.0, 1.0, 1.0), layers=((1,), (2, 3)), methods=("pca_diff", "mean_diff"))
    cfg = SearchConfig(space=space, n_trials=3, limit=6, chunk_size=3, scoring="letter", tpe_startup_trials=2)
    seen = []
    res = run_isv_search(tiny, "age", cfg, tmp_path, progress=seen.append)
    assert [r.finished for r in seen] == [1, 2, 3] and all(r.n_trials == 3 for r in seen)
    study = optuna.load_study(study_name=res.study_name, storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    best = max((t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE), key=lambda t: (t.value, -t.number))
    summary = json.loads((tmp_path / "study.json").read_text())
    assert summary["best_value"] == best.value and summary["best_trial"] == best.number
    saved = load_vector(tmp_path / "isv.safetensors", tiny)
    prov = saved.metadata.provenance
    assert prov["study"] == res.study_name and prov["params"]["corpus"] == best.params["corpus"] and prov["coeff"] == pytest.approx(best.params["coeff"])
    fresh = trial_params_vector(tiny, prov["params"])  # rebuilt without the cache
    assert saved.layers == fresh.layers
    assert all(torch.allclose(saved.directions[k], fresh.directions[k], atol=1e-4) for k in saved.layers)
    assert json.loads((tmp_path / "config.json").read_text())["limit"] == 6
    assert (tmp_path / "optimization_history.html").is_file()
    # a second run of the same command joins the finished study and adds nothing
    again = run_isv_search(tiny, "age", cfg, tmp_path)
    assert again.n_trials == 3 and len(optuna.load_study(study_name=res.study_name, storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials) == len(study.trials)


def test_unknown_axis_is_one_line(tiny, tmp_path: Path) -> None:
    with pytest.raises(LensSteerError, match="unknown axis 'klingon'"):
        run_isv_search(tiny, "klingon", SearchConfig(space=SMALL), tmp_path)
    assert not (tmp_path / "optuna.db").exists()
