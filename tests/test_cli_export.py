"""`lens-steer export`: files that load back as the vector times the coefficient; one-line errors, no file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from _hf_pair import random_vector
from _one_line import assert_cli_fails
from _tiny_models import bridge_only, make_tiny, single_thread  # noqa: F401

from lens_steer.cli import main
from lens_steer.steering.vectors import load_vector

pytestmark = bridge_only


@pytest.fixture(scope="module")
def model() -> Any:
    return make_tiny("bridge")


@pytest.mark.parametrize(
    "fmt,name,targets",
    [
        ("lm-eval", "v.pt", ["layers.1", "layers.3"]),
        ("gguf", "v.gguf", ["direction.1", "direction.3"]),
        ("hf", "v.safetensors", ["model.layers.1 (output)", "model.layers.3 (output)"]),
    ],
)
def test_export_writes_what_loads_back(
    model: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], fmt: str, name: str, targets: list[str]
) -> None:
    vector = random_vector(model, [1, 3])
    src = vector.save(tmp_path / "v.safetensors" if fmt != "hf" else tmp_path / "src.safetensors")
    out = tmp_path / name
    assert main(["export", str(src), "--to", fmt, "--coeff", "-2.5", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert f"wrote {out}: {fmt} for llama (tiny-llama), coefficient -2.5" in stdout
    for layer, target in zip([1, 3], targets):
        assert f"blocks.{layer}.hook_resid_post -> {target}" in stdout
    back = load_vector(out, model)
    for layer in (1, 3):
        assert torch.equal(back.directions[layer], vector.directions[layer] * -2.5)
    assert back.metadata.hook == "hook_resid_post" and back.metadata.provenance["origin"] == f"imported from {fmt}"


def test_export_reads_a_foreign_file_with_the_model(model: Any, tmp_path: Path) -> None:
    d = int(model.cfg.d_model)
    torch.save({2: torch.arange(d, dtype=torch.float32)}, tmp_path / "plain.pt")
    assert (
        main(
            [
                "export",
                str(tmp_path / "plain.pt"),
                "--model",
                "tiny-llama",
                "--to",
                "gguf",
                "--out",
                str(tmp_path / "v.gguf"),
            ]
        )
        == 0
    )
    import gguf

    tensors = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(str(tmp_path / "v.gguf")).tensors}
    assert list(tensors) == ["direction.2"] and np.array_equal(tensors["direction.2"], np.arange(d, dtype=np.float32))


def test_export_refusals_are_one_line_and_write_nothing(
    model: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = random_vector(model, [1]).save(tmp_path / "in" / "v.safetensors")
    attn = random_vector(model, [1], hook="hook_attn_out").save(tmp_path / "in" / "attn.safetensors")
    first = random_vector(model, [0]).save(tmp_path / "in" / "first.safetensors")
    out = tmp_path / "out"
    assert_cli_fails(
        capsys, ["export", str(src), "--to", "onnx", "--out", str(out / "v.onnx")], "'onnx'", "lm-eval, gguf, hf"
    )
    assert_cli_fails(capsys, ["export", str(attn), "--to", "gguf", "--out", str(out / "v.gguf")], "hook_attn_out")
    assert_cli_fails(capsys, ["export", str(first), "--to", "gguf", "--out", str(out / "v.gguf")], "block 0")
    assert_cli_fails(capsys, ["export", str(src), "--to", "lm-eval", "--out", str(out / "v.safetensors")], ".pt")
    assert_cli_fails(
        capsys, ["export", str(src), "--to", "gguf", "--arch", "bert", "--out", str(out / "v.gguf")], "'bert'"
    )
    assert_cli_fails(
        capsys,
        ["export", str(tmp_path / "missing.safetensors"), "--to", "gguf", "--out", str(out / "v.gguf")],
        "does not exist",
    )
    (tmp_path / "in" / "junk.pt").write_bytes(b"junk bytes")
    assert_cli_fails(
        capsys, ["export", str(tmp_path / "in" / "junk.pt"), "--to", "gguf", "--out", str(out / "v.gguf")], "junk.pt"
    )
    assert not out.exists()
