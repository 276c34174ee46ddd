"""`lens-steer generate`: the library's steered generation, printed; --compare side by side; one-line errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _hf_pair import random_vector
from _tiny_models import bridge_only, make_tiny, single_thread  # noqa: F401

from lens_steer.cli import main
from lens_steer.cli.generate import side_by_side
from lens_steer.forward.generation import generate
from lens_steer.model.chat import render_chat
from lens_steer.model.tokens import encode_texts

pytestmark = bridge_only


@pytest.fixture(scope="module")
def model() -> Any:
    return make_tiny("bridge")


def test_generate_prints_the_steered_continuation(
    model: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vector = random_vector(model, [1, 2], scale=5.0)
    path = vector.save(tmp_path / "v.safetensors")
    assert main(["generate", "Hello there", "--model", "tiny-llama", "--max-new-tokens", "7"]) == 0
    plain = generate(model, encode_texts(model, ["Hello there"]), max_new_tokens=7)[0].text
    assert capsys.readouterr().out == plain + "\n"
    args = [
        "generate",
        "Hi",
        "--model",
        "tiny-llama",
        "--chat",
        "--max-new-tokens",
        "9",
        "--vector",
        str(path),
        "--coeff",
        "2",
        "--positions",
        "generated",
        "--repetition-penalty",
        "2",
    ]
    assert main(args) == 0
    ids = model.tokenizer(render_chat(model.tokenizer, None, "Hi"), add_special_tokens=False)["input_ids"]
    steered = generate(
        model, [ids], max_new_tokens=9, vector=vector, coeff=2.0, positions="generated", repetition_penalty=2.0
    )[0].text
    assert capsys.readouterr().out == steered + "\n"


def test_compare_prints_both_texts_side_by_side(
    model: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "90")
    vector = random_vector(model, [1, 2], scale=5.0)
    path = vector.save(tmp_path / "v.safetensors")
    kw = {"max_new_tokens": 12, "repetition_penalty": 2.0}
    assert (
        main(
            [
                "generate",
                "Once upon",
                "--model",
                "tiny-llama",
                "--vector",
                str(path),
                "--compare",
                "--max-new-tokens",
                "12",
                "--repetition-penalty",
                "2",
            ]
        )
        == 0
    )
    ids = encode_texts(model, ["Once upon"])
    plain, steered = generate(model, ids, **kw)[0].text, generate(model, ids, vector=vector, coeff=1.0, **kw)[0].text
    assert plain != steered
    expected = side_by_side(plain, steered, ("unsteered", "steered (coeff 1, positions all)"), 90)
    assert capsys.readouterr().out.splitlines() == expected
    assert expected[0].startswith("unsteered") and expected[0].endswith("steered (coeff 1, positions all)")


def test_generate_refusals_are_one_line(model: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = random_vector(model, [1]).save(tmp_path / "v.safetensors")
    for args, needle in (
        (["generate", "Hi", "--model", "tiny-llama", "--compare"], "--compare needs --vector"),
        (["generate", "Hi", "--model", "tiny-llama", "--vector", str(path), "--positions", "middle"], "'middle'"),
        (["generate", "  ", "--model", "tiny-llama"], "empty"),
        (["generate", "Hi", "--model", "tiny-llama", "--max-new-tokens", "0"], "max_new_tokens"),
        (["generate", "Hi", "--model", "tiny-llama", "--vector", str(tmp_path / "none.gguf")], "does not exist"),
    ):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and needle in err, err
