"""Tests for lens_steer.pipeline.stage_cache: a stage is read back only for the inputs it was computed from."""

from __future__ import annotations

import json
from pathlib import Path

from lens_steer.pipeline.stage_cache import cached_stage, read_stage


def test_a_stage_is_read_back_for_the_same_inputs_and_recomputed_for_others(tmp_path: Path) -> None:
    path = tmp_path / "stage" / "s.json"
    calls: list[int] = []

    def compute(v: int):
        return lambda: calls.append(v) or {"value": v, "pair": (v, v)}

    assert cached_stage(path, {"seed": 1, "layers": (2, 3)}, compute(1)) == {"value": 1, "pair": [1, 1]}
    assert cached_stage(path, {"seed": 1, "layers": [2, 3]}, compute(9)) == {
        "value": 1,
        "pair": [1, 1],
    }  # tuples read back as lists
    assert calls == [1]
    assert cached_stage(path, {"seed": 2, "layers": [2, 3]}, compute(2))["value"] == 2 and calls == [1, 2]
    assert json.loads(path.read_text())["inputs"] == {"seed": 2, "layers": [2, 3]}


def test_a_damaged_or_old_format_stage_is_recomputed(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"value": 1')  # cut mid-write by another tool
    assert read_stage(path, {"seed": 1}) is None
    path.write_text(json.dumps({"value": 1}))  # a stage file from before the inputs were recorded
    assert read_stage(path, {"seed": 1}) is None
    assert cached_stage(path, {"seed": 1}, lambda: {"value": 5}) == {"value": 5} == read_stage(path, {"seed": 1})
