"""`lens-steer eval` on the tiny model: outputs recompute, bad input is one line (exit 2)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lens_steer.cli import main

DATA = Path(os.environ.get("LENS_STEER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
pytestmark = pytest.mark.skipif(
    not (DATA / "bbq").is_dir(), reason=f"missing data: shared data not found at {DATA}; set LENS_STEER_DATA"
)
BASE = ["eval", "--model", "tiny-llama", "--data-dir", str(DATA), "--n-boot", "50"]


def test_eval_bbq_writes_metrics_that_recompute_from_predictions(tmp_path: Path, capsys):
    out = tmp_path / "ev"
    assert (
        main([*BASE, "--bench", "bbq", "--categories", "Age", "--limit", "8", "--scoring", "letter", "--out", str(out)])
        == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == metrics["meta"]["n_items"] == 8
    assert metrics["overall"]["acc"]["value"] == pytest.approx(sum(r["pred"] == r["label"] for r in rows) / 8)
    for key in ("value", "ci_low", "ci_high", "n"):
        assert key in metrics["overall"]["bias_ambig"]
    r = rows[0]
    assert r["prompt"].startswith("<|im_start|>") and [len(x) for x in r["option_token_ids"]] == [1, 1, 1]
    assert "acc" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--bench", "trivia"], "unknown bench 'trivia'; use one of bbq, mmlu, crows"),
        (["--bench", "bbq", "--categories", "Martian"], "Martian"),
        (["--bench", "bbq", "--categories", "Age", "--split", "dev"], "unknown split 'dev'"),
        (["--bench", "bbq", "--categories", "Age", "--scoring", "vibes"], "unknown scoring 'vibes'"),
        (["--bench", "bbq", "--categories", ","], "empty --categories list"),
    ],
)
def test_eval_bad_input_is_one_line(tmp_path: Path, capsys, extra, message):
    assert main([*BASE, *extra, "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "x" / "metrics.json").exists()


def test_eval_missing_data_root_names_where_it_looked(tmp_path: Path, capsys):
    assert (
        main(
            [
                "eval",
                "--model",
                "tiny-llama",
                "--data-dir",
                str(tmp_path / "nowhere"),
                "--bench",
                "mmlu",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "nowhere" in err and "\n" not in err


def test_eval_refuses_a_vector_from_another_model(tmp_path: Path, capsys):
    import torch

    from lens_steer.steering.vectors import SteeringVector, VectorMetadata

    path = SteeringVector({1: torch.ones(576)}, VectorMetadata("smollm2-135m-instruct", 576)).save(
        tmp_path / "v.safetensors"
    )
    assert (
        main(
            [
                *BASE,
                "--bench",
                "bbq",
                "--categories",
                "Age",
                "--limit",
                "4",
                "--vector",
                str(path),
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "576" in err and "tiny-llama" in err and "\n" not in err


def test_eval_ids_selects_exactly_the_named_items_in_order(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("# two Age items and one Religion item\nReligion,5\nAge,12\n\nage,3\n")
    out = tmp_path / "ev"
    assert main([*BASE, "--bench", "bbq", "--ids", str(ids), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [(r["category"], r["example_id"]) for r in rows] == [("Religion", 5), ("Age", 12), ("Age", 3)]
    meta = json.loads((out / "metrics.json").read_text())["meta"]
    assert meta["split"].startswith("ids:") and meta["tokenization"]["bos_policy"] == "tokenizer-default"
    for r in rows:  # raw numbers recompute the normalised scores and the answer
        lls = r["option_logliks"]
        assert r["option_answer"][max(range(len(lls)), key=lambda i: (lls[i], -i))] == r["pred"]
        assert len(r["option_logliks"]) == len(r["option_token_counts"]) == len(r["options"]) == 3


def test_eval_lm_eval_format_scores_lm_evals_twelve_choices(tmp_path: Path) -> None:
    from lens_steer.data.bbq import LM_EVAL_UNKNOWN_RESPONSES

    out = tmp_path / "ev"
    assert (
        main(
            [
                *BASE,
                "--bench",
                "bbq",
                "--categories",
                "Age",
                "--limit",
                "4",
                "--prompt-format",
                "lm_eval",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    for r in rows:
        assert (
            r["options"][2:] == list(LM_EVAL_UNKNOWN_RESPONSES) and r["option_answer"][2:] == [r["unknown_index"]] * 10
        )
        assert r["prompt"].endswith("\nA:") and not r["prompt"].startswith("<|im_start|>")


@pytest.mark.parametrize(
    ("ids_text", "message"),
    [
        ("Age;12\n", "expected 'category,example_id'"),
        ("Age,999999\n", "no loaded BBQ item Age,999999"),
        ("\n# nothing\n", "names no item"),
    ],
)
def test_eval_ids_bad_file_is_one_line(tmp_path: Path, capsys, ids_text: str, message: str) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text(ids_text)
    assert main([*BASE, "--bench", "bbq", "--ids", str(ids), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not (tmp_path / "x").exists()


@pytest.mark.parametrize(
    ("protocol", "n"),
    [(["--scoring", "generate", "--limit", "4"], 4), (["--baseline", "self-debias", "--limit", "2"], 2)],
    ids=["generate", "self-debias"],
)
def test_eval_bbq_generation_protocols_count_unparsed_replies_as_wrong(
    tmp_path: Path, capsys, protocol: list[str], n: int
) -> None:
    from lens_steer.forward.generation import PARSE_RULES, parse_answer

    out = tmp_path / "ev"
    assert main([*BASE, "--bench", "bbq", *protocol, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == n
    for (
        r
    ) in rows:  # each reply, parsed again, gives its record's answer and rule (self-debias notes the kept candidate)
        parsed = parse_answer(r["reply"], r["options"])
        assert (r["pred"], r["parse_rule"].split(";")[0], r["unparsed"]) == (
            parsed.pred,
            parsed.rule,
            parsed.pred == -1,
        )
    assert all(r["pred"] == -1 for r in rows)  # the tiny random model's replies are unparseable
    assert metrics["unparsed"]["overall"] == {"n": n, "n_items": n, "rate": 1.0}
    cond = {c: sum(r["context_condition"] == c for r in rows) for c in ("ambig", "disambig")}
    assert {c: metrics["unparsed"][c]["n"] for c in cond} == cond
    assert metrics["meta"]["parse_counts"] == {rule: n if rule == "unparsed" else 0 for rule in PARSE_RULES}
    overall = metrics["overall"]
    assert overall["acc"]["value"] == 0.0  # unparsed = wrong
    assert (
        overall["bias_ambig"]["value"]
        == overall["bias_disambig"]["value"]
        == overall["unknown_rate_ambig"]["value"]
        == 0.0
    )
    assert f"unparsed (wrong)        {n} of {n} (1.000)" in capsys.readouterr().out
