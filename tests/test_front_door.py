"""The README's quick start, read from README.md by its marker, runs as written (integration: the embedded model),
and gives what the modules behind the front door give when called directly; the front door's names resolve."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import lens_steer

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- quickstart: tests/test_front_door.py runs the next code block as written -->"
DATA = Path(os.environ.get("LENS_STEER_DATA", ROOT.parent / "shared" / "data"))


def quickstart_block() -> str:
    """The ```python block right after the marker in README.md."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert text.count(MARKER) == 1, "README.md needs exactly one quick-start marker"
    match = re.match(r"\s*```python\n(.*?)\n```", text.split(MARKER, 1)[1], re.S)
    assert match, "the quick-start marker must be followed by a ```python block"
    return match.group(1)


def test_the_quick_start_is_on_the_first_screen_and_uses_only_the_front_door() -> None:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    head = text[: text.index(MARKER)]
    assert "bash scripts/main.sh" in head and "bash scripts/test.sh" in head and len(head.splitlines()) <= 20
    tree = ast.parse(quickstart_block())
    imports = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [(n.module, n.level) for n in imports if isinstance(n, ast.ImportFrom)] == [("lens_steer", 0)]
    names = {a.name for n in imports for a in n.names}
    assert {"load_model", "pairs", "extract_vector", "steer", "evaluate"} <= names <= set(lens_steer.__all__)


def test_every_front_door_name_is_what_its_module_holds() -> None:
    import importlib

    assert set(lens_steer.__all__) == {"__version__", *lens_steer.EXPORTS}
    for name, (module, attr) in lens_steer.EXPORTS.items():
        target = importlib.import_module(module)
        assert getattr(lens_steer, name) is (target if attr is None else getattr(target, attr)), name
    with pytest.raises(AttributeError, match="no attribute 'extract_vectors'"):
        lens_steer.extract_vectors  # noqa: B018
    # the subpackage keeps its name: `import lens_steer.extract.<module> as m` works beside the front door
    import lens_steer.extract.activations as activations

    assert lens_steer.extract_vector is activations.extract_vector


def test_importing_a_base_module_loads_no_torch() -> None:
    code = "import sys, lens_steer.errors, lens_steer; print('torch' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.integration
def test_the_readme_quick_start_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lens_steer.model.load import ModelError, embedded_smollm2_folder

    try:
        embedded_smollm2_folder()
    except ModelError as e:
        pytest.skip(f"missing weights: embedded SmolLM2 not installed: {e}")
    if not (DATA / "bbq").is_dir():
        pytest.skip(f"missing data: shared data not found at {DATA}; set LENS_STEER_DATA")
    monkeypatch.chdir(tmp_path)  # the block writes its files where it runs
    monkeypatch.setenv("LENS_STEER_DATA", str(DATA))
    torch.set_num_threads(1)
    scope: dict[str, Any] = {}
    exec(compile(quickstart_block(), "README.md quick start", "exec"), scope)

    from lens_steer.data.select import select
    from lens_steer.extract.activations import extract_vector
    from lens_steer.extract.pairs import axis_persona_pairs
    from lens_steer.steering.vectors import load_vector
    from lens_steer.tasks.bbq import run_bbq

    model, vector, base, steered = scope["model"], scope["vector"], scope["base"], scope["steered"]
    # what the front door gave, computed again through the modules behind it
    again = extract_vector(model, axis_persona_pairs("age", model.tokenizer, num_sents=32), [15])
    assert torch.allclose(vector.directions[15], again.directions[15], atol=1e-5) and vector.scale == "contrast"
    items = select("age", "test", 24)
    direct = run_bbq(model, items, vector=vector, coeff=4.0)
    assert [r["example_id"] for r in steered.records] == [it.example_id for it in items]
    assert [r["pred"] for r in steered.records] == [r["pred"] for r in direct.records]
    assert steered.metrics["overall"]["acc"] == direct.metrics["overall"]["acc"]
    assert any(a["option_logliks"] != b["option_logliks"] for a, b in zip(base.records, steered.records))
    assert scope["logits"].shape[-1] == model.cfg.d_vocab
    saved, exported = load_vector(tmp_path / "age.safetensors", model), load_vector(tmp_path / "age.pt", model)
    assert torch.equal(saved.directions[15], vector.directions[15])
    assert torch.allclose(exported.directions[15], 4.0 * vector.directions[15])
