"""Tests for `lens-steer info` and `lens-steer extract` on the tiny model, through lens_steer.cli.main."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from _one_line import assert_cli_fails
from _tiny_models import bridge_only, make_tiny, single_thread  # noqa: F401 (autouse fixture)

from lens_steer.cli import main
from lens_steer.model.chat import render_chat
from lens_steer.model.load import TINY_MODEL
from lens_steer.steering.vectors import load_vector

pytestmark = bridge_only  # the CLI loads models through load_model, i.e. a TransformerBridge

PAIRS = [
    {"positive": "I love this film", "negative": "I hate this film"},
    {"positive": "What a kind person", "negative": "What a cruel person"},
    {"positive": "Good work", "negative": "Bad work"},
]


@pytest.fixture(scope="module")
def model() -> Any:
    return make_tiny("bridge")


def write_pairs(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def last_act(model: Any, text: str, layer: int, prepend_bos: bool | None = None) -> torch.Tensor:
    name = f"blocks.{layer}.hook_resid_post"
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, cache = model.run_with_cache(
            model.to_tokens(text, prepend_bos=prepend_bos), names_filter=lambda n: n == name
        )
    return cache[name][0, -1]


def test_info_reports_the_model(capsys: pytest.CaptureFixture[str], model: Any) -> None:
    assert main(["info", "--model", TINY_MODEL]) == 0
    out = capsys.readouterr().out
    assert f"model: {TINY_MODEL}" in out
    assert re.search(r"layers: 4 \(0\.\.3\)", out)
    assert f"d_model: {model.cfg.d_model}" in out
    assert "fold_ln=False" in out
    kinds = re.search(r"steerable hook kinds per block: (.*)", out).group(1).split(", ")
    assert kinds == ["hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out"]
    examples = re.search(r"examples: (.*)", out).group(1).split(", ")
    assert examples and all(e in model.hook_dict for e in examples)


def test_info_all_hooks_lists_real_hook_points(capsys: pytest.CaptureFixture[str], model: Any) -> None:
    assert main(["info", "--model", TINY_MODEL, "--all-hooks"]) == 0
    listed = [line.strip() for line in capsys.readouterr().out.splitlines() if line.startswith("  blocks.0.")]
    assert listed and all(name in model.hook_dict for name in listed)
    assert len(listed) == len({n for n in model.hook_dict if n.startswith("blocks.0.")})


def test_extract_mean_diff_equals_statistics_from_run_with_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: Any
) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "v.safetensors"
    rc = main(
        [
            "extract",
            "--model",
            TINY_MODEL,
            "--pairs",
            str(pairs),
            "--layers",
            "1,3",
            "--method",
            "mean_diff",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    vec = load_vector(out, model)
    assert vec.layers == (1, 3) and vec.metadata.method == "mean_diff"
    assert vec.metadata.provenance["builder"] == "jsonl" and vec.metadata.provenance["n_pairs"] == 3
    for layer in (1, 3):
        expected = torch.stack(
            [last_act(model, p["positive"], layer) - last_act(model, p["negative"], layer) for p in PAIRS]
        ).mean(0)
        torch.testing.assert_close(vec.directions[layer], expected, atol=1e-4, rtol=0)
    printed = capsys.readouterr().out
    assert str(out) in printed
    for layer in (1, 3):
        norm = float(re.search(rf"layer {layer}: norm ([0-9.]+)", printed).group(1))
        assert norm == pytest.approx(float(vec.directions[layer].norm()), abs=1e-3)


def test_extract_pca_diff_with_chat_template(tmp_path: Path, model: Any) -> None:
    pairs = write_pairs(tmp_path / "pairs.jsonl", PAIRS)
    out = tmp_path / "chat.safetensors"
    args = [
        "extract",
        "--model",
        TINY_MODEL,
        "--pairs",
        str(pairs),
        "--layers",
        "2",
        "--method",
        "pca_diff",
        "--out",
        str(out),
        "--chat",
        "--hook",
        "hook_resid_post",
    ]
    assert main(args) == 0
    vec = load_vector(out, model)
    assert vec.metadata.provenance["chat"] is True
    diffs = torch.stack(
        [
            last_act(model, render_chat(model.tokenizer, None, p["positive"]), 2, prepend_bos=False)
            - last_act(model, render_chat(model.tokenizer, None, p["negative"]), 2, prepend_bos=False)
            for p in PAIRS
        ]
    ).double()
    centred = diffs - diffs.mean(0)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    got = vec.directions[2].double()
    # the first component, scaled to the mean contrast (coefficient 1 = the mean positive-negative difference)
    assert float(got.norm()) == pytest.approx(float(diffs.mean(0).norm()), rel=1e-4) and vec.scale == "contrast"
    assert abs(float(got @ vh[0]) / float(got.norm())) == pytest.approx(1.0, abs=1e-4)
    assert int(((diffs @ got) > 0).sum()) >= int(((diffs @ got) < 0).sum())


def test_extract_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model: Any
) -> None:
    out = tmp_path / "never.safetensors"
    base = ["extract", "--model", TINY_MODEL, "--out", str(out), "--method", "mean_diff"]
    bad_json = write_pairs(tmp_path / "bad.jsonl", [PAIRS[0], "{not json"])
    assert_cli_fails(capsys, [*base, "--pairs", str(bad_json), "--layers", "1"], "bad.jsonl", "line 2")
    empty_side = write_pairs(tmp_path / "empty.jsonl", [PAIRS[0], PAIRS[1], {"positive": "x", "negative": ""}])
    assert_cli_fails(
        capsys, [*base, "--pairs", str(empty_side), "--layers", "1"], "empty.jsonl", "line 3", "'negative'"
    )
    good = write_pairs(tmp_path / "good.jsonl", PAIRS)
    assert_cli_fails(capsys, [*base, "--pairs", str(good), "--layers", "1,9"], "layer 9", "0..3")
    assert_cli_fails(capsys, [*base, "--pairs", str(good), "--layers", "one"], "'one'")
    assert_cli_fails(capsys, [*base, "--pairs", str(tmp_path / "absent.jsonl"), "--layers", "1"], "absent.jsonl")
    assert_cli_fails(
        capsys,
        ["extract", "--model", "no-such-model", "--pairs", str(good), "--layers", "1", "--out", str(out)],
        "'no-such-model'",
    )
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.jsonl", "empty.jsonl", "good.jsonl"]  # no temp files
