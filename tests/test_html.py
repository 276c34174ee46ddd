"""Tests for lens_steer.report.html: one plotly copy, one div per figure, the reading order, escaping, files."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import plotly.offline
import pytest
from _results_fixtures import META, full_results, typed

from lens_steer.pipeline.results import Results
from lens_steer.report.html import report_html, write_report
from lens_steer.report.markdown import results_markdown


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    return full_results()


def test_html_has_one_plotly_copy_and_one_div_per_figure(results: dict[str, Any]) -> None:
    page = report_html(typed(results))
    js = plotly.offline.get_plotlyjs()
    assert page.count(js[:200]) == 1 and page.count(js[-200:]) == 1
    assert page.count('<script type="text/javascript">' + js[:50]) == 1
    ids = re.findall(r'<div id="(fig-[a-z]+)"', page)
    assert ids == ["fig-forest", "fig-accuracy", "fig-sweep", "fig-cosine", "fig-history"]
    assert "<script src=" not in page and page.count("<script") == 1 + len(ids)  # the library, then one per figure


def test_write_report_writes_both_files(results: dict[str, Any], tmp_path: Path) -> None:
    paths = write_report(typed(results), tmp_path / "out")
    assert paths["markdown"].read_text() == results_markdown(typed(results))
    assert paths["html"].name == "report.html" and paths["html"].stat().st_size > len(plotly.offline.get_plotlyjs())
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "results.md"]


def test_missing_stages_say_not_run(tmp_path: Path) -> None:
    for res in (Results(), typed({"meta": META})):
        page = report_html(res)
        assert re.findall(r'<div id="fig-', page) == [] and page.count("not run") >= 4
    only_geometry = typed({"geometry": full_results({})["geometry"]})
    assert re.findall(r'<div id="(fig-[a-z]+)"', report_html(only_geometry)) == ["fig-cosine"]
    write_report(Results(), tmp_path)
    assert (tmp_path / "results.md").is_file()


def test_data_text_is_escaped(results: dict[str, Any]) -> None:
    hostile = {**results, "meta": {**META, "model": "<script>alert(1)</script> & co"}}
    hostile["ensemble"] = {**results["ensemble"], "ood": {"Race_x_SES": {"skipped": "no <b>data</b> | here"}}}
    page = report_html(typed(hostile))
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp;amp; co" not in page
    assert (
        "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
        and "<b>data</b>" not in page
        and "no &lt;b&gt;data&lt;/b&gt;" in page
    )


def test_the_page_opens_with_the_claims_and_the_forest_plot(results: dict[str, Any]) -> None:
    page = report_html(typed(results))
    assert (
        page.index("Claims of Siddique et al. (2025)")
        < page.index('id="fig-forest"')
        < page.index("How capable the unsteered model is")
        < page.index("<h2>Details</h2>")
    )
    assert page.count('class="held"') == 4  # the four verdicts of a clear win, styled
