"""Fixtures the search and cache tests share: whether the shared data is there, the tiny model, a small space."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from lens_steer.data.root import resolve_data_root
from lens_steer.errors import LensSteerError
from lens_steer.methods.search.space import SearchSpace


def data_ok() -> bool:
    """Whether the shared data (prompt corpora and BBQ) is found."""
    try:
        root = resolve_data_root()
    except LensSteerError:
        return False
    return (root / "prompt_corpora" / "age.json").is_file() and (root / "bbq").is_dir()


needs_data = pytest.mark.skipif(
    not data_ok(), reason="missing data: shared data (prompt_corpora, bbq) not found; set LENS_STEER_DATA"
)

SMALL = SearchSpace(
    kinds=("additive",),
    corpora=("age", "race", "gender"),
    num_sents=(100, 500, 50),
    personas=(0, 1, 2),
    templates=(0,),
    coeff=(-2.0, 2.0, 0.2),
    layers=((1,), (2,), (1, 2)),
    methods=("pca_diff",),
)


@pytest.fixture(scope="module")
def tiny() -> Any:
    """The tiny random Llama (tiny-llama), loaded quietly once per test module."""
    from lens_steer.model.load import load_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_model("tiny-llama")
