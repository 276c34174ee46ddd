"""Tests for lens_steer.cli.options: the analyses scripts' common parser and the progress lines of a log."""

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


def test_progress_in_a_log_is_a_line_per_tenth_with_its_note(capsys):
    """stderr is not a terminal under capsys: lines, no bar. 100 units one at a time: the start, then every 10."""
    from lens_steer.cli.options import ProgressReport

    report = ProgressReport(100, "extract", seconds=1e9)
    for k in range(1, 101):
        report.update(1, "running loss 0.5000" if k == 95 else None)
    report.close()  # everything shown already: no repeat
    lines = capsys.readouterr().err.splitlines()
    expected = ["extract: 0 of 100"] + [f"extract: {k} of 100 ({k}%)" for k in range(10, 100, 10)]
    assert lines == expected + ["extract: 100 of 100 (100%), running loss 0.5000"]


def test_progress_shows_the_last_count_on_close_and_after_the_time_limit(capsys):
    from lens_steer.cli.options import ProgressReport

    report = ProgressReport(50, "eval", seconds=0.0)  # every update is past the time limit
    report.update(1)
    report.update(1)
    slow = capsys.readouterr().err.splitlines()
    assert slow == ["eval: 0 of 50", "eval: 1 of 50 (2%)", "eval: 2 of 50 (4%)"]
    quiet = ProgressReport(50, "eval", seconds=1e9)
    quiet.update(3)  # below a tenth (5): not shown until close
    quiet.close()
    assert capsys.readouterr().err.splitlines() == ["eval: 0 of 50", "eval: 3 of 50 (6%)"]


def test_the_organism_progress_closes_itself_at_the_total(capsys):
    from lens_steer.cli.organism import progress_with_loss

    update = progress_with_loss("epoch 1", 4)
    update(2, 1.25)
    update(2, None)  # the loss shown last stays
    assert capsys.readouterr().err.splitlines() == [
        "epoch 1: 0 of 4",
        "epoch 1: 2 of 4 (50%), running loss 1.2500",
        "epoch 1: 4 of 4 (100%), running loss 1.2500",
    ]
