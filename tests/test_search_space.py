"""Tests for lens_steer.methods.search.space: the search space and config as data, and their one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _study_fixtures import SMALL

from lens_steer.errors import StudyError
from lens_steer.methods.search.space import SearchConfig, SearchSpace, layer_label


def test_space_json_round_trip_and_labels() -> None:
    back = SearchSpace.from_json(json.loads(json.dumps(SMALL.to_json())))
    assert back == SMALL
    assert [layer_label(c) for c in ((3,), (4, 5, 6), (1, 3))] == ["3", "4-6", "1,3"]
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


def test_seeds_are_integers_and_the_data_seed_is_part_of_the_fingerprint() -> None:
    base = SearchConfig(space=SMALL)
    assert SearchConfig.from_json({**base.to_json(), "data_seed": 4}).data_seed == 4
    assert SearchConfig(space=SMALL, data_seed=4).fingerprint() != base.fingerprint()  # other items: other values
    with pytest.raises(StudyError, match="data_seed must be an integer"):
        SearchConfig(data_seed=1.5)  # type: ignore[arg-type]
