"""Tests for lens_steer.cli.options: the analyses scripts' common parser."""

from __future__ import annotations

import pytest

from lens_steer.cli.options import analysis_parser


def test_analysis_parser_defaults_and_given_values():
    doc = "Layer sweep: one line.\n\nMore text."
    p = analysis_parser(doc, "layer_sweep")
    assert p.description == doc.split("\n", 1)[0]
    d = p.parse_args([])
    assert (d.out, d.model, d.device, d.data_dir) == ("out/layer_sweep", "smollm2-135m-instruct", "cpu", None)
    p.add_argument("--axis", default="age")  # a script adds its own options after the common ones
    g = p.parse_args(
        ["--out", "x", "--model", "tiny-llama", "--device", "meta", "--data-dir", "/d", "--axis", "gender"]
    )
    assert (g.out, g.model, g.device, g.data_dir, g.axis) == ("x", "tiny-llama", "meta", "/d", "gender")


def test_analysis_parser_help_names_the_default_folder(capsys):
    with pytest.raises(SystemExit):
        analysis_parser("Doc.", "vector_geometry").parse_args(["--help"])
    assert "default: out/vector_geometry" in capsys.readouterr().out
