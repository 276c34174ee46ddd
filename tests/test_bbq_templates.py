"""Tests for lens_steer.data.bbq_templates: the published generator's word-list parsing, quirks included."""

from __future__ import annotations

import pytest

from lens_steer.data.bbq_templates import parse_word_lists
from lens_steer.errors import DataError


def test_parse_word_lists_published_semantics() -> None:
    assert parse_word_lists("NAME1: [a, b c]; NAME2: [d]") == (["a", "b c"], ["d"])
    assert parse_word_lists("{{WORD1}}: [x, y]") == (["x", "y"], [])
    # a later segment that does not name the second list clears it (as the published parser does)
    assert parse_word_lists("NAME2: [a]; NAME1: [b]") == (["b"], [])
    assert parse_word_lists("NAME1: [p; q]; NAME2: [r]")[0] == ["p"]
    with pytest.raises(DataError):
        parse_word_lists("NAME2: [a]")
