"""Fixtures the tasks tests share: the shared data folder (skip when it lacks BBQ) and the tiny model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from lens_steer.model.load import load_model

DATA = Path(os.environ.get("LENS_STEER_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
needs_bbq = pytest.mark.skipif(
    not (DATA / "bbq").is_dir(), reason=f"missing data: shared data not found at {DATA}; set LENS_STEER_DATA"
)


@pytest.fixture(scope="module")
def model() -> Any:
    """The tiny random Llama (tiny-llama, seed 1), once per test module."""
    return load_model("tiny-llama", seed=1)
