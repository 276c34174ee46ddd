"""Tests for lens_steer.report.html: one plotly copy, one div per figure, the reading order, escaping, files, the
contents against the section headings, what the run can show (the smoke notice), rendered Markdown, scrolling tables."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import plotly.offline
import pytest
from _results_fixtures import META, full_results, typed, with_steerability

from lens_steer.pipeline.results import Results
from lens_steer.report.figures import FIGURE_SECTIONS, FIGURE_TITLES
from lens_steer.report.html import report_html, write_report
from lens_steer.report.markdown import results_markdown
from lens_steer.report.scope import SCOPE_HEADING


class PageOutline(HTMLParser):
    """What a reader sees of a page, read by the standard library's parser: the text outside scripts and styles, the
    headings (tag, id, text) and the contents' links (target, text)."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.text: list[str] = []
        self.headings: list[tuple[str, str | None, str]] = []
        self.links: list[tuple[str, str]] = []
        self._skip = 0
        self._heading: tuple[str, str | None] | None = None
        self._link: str | None = None
        self._in_nav = False
        self._buffer: list[str] = []
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "nav":
            self._in_nav = True
        elif tag in ("h1", "h2", "h3") and not self._in_nav:
            self._heading, self._buffer = (tag, a.get("id")), []
        elif tag == "a" and self._in_nav:
            self._link, self._buffer = (a.get("href") or "").removeprefix("#"), []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip -= 1
        elif tag == "nav":
            self._in_nav = False
        elif self._heading is not None and tag == self._heading[0]:
            self.headings.append((*self._heading, "".join(self._buffer)))
            self._heading = None
        elif tag == "a" and self._link is not None:
            self.links.append((self._link, "".join(self._buffer)))
            self._link = None

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.text.append(data)
            self._buffer.append(data)


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
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["report.html", "results.md", "sweep"]
    assert paths["sweep"] == tmp_path / "out" / "sweep" / "sweep.html"  # the fixture ran a layer sweep


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


def test_the_page_opens_with_what_the_run_can_show_then_the_contents_the_claims_and_the_forest_plot(
    results: dict[str, Any],
) -> None:
    page = report_html(typed(results))
    assert (
        page.index("<h1")
        < page.index('<section class="scope">')
        < page.index("What this run can show")
        < page.index('<nav class="contents"')
        < page.index('<h2 id="claims-of-siddique-et-al-2025">Claims of Siddique et al. (2025)</h2>')
        < page.index('id="fig-forest"')
        < page.index('<h2 id="how-capable-the-unsteered-model-is">')
        < page.index('<h2 id="bbq-accuracy-baseline-isv-sve-beside-the-paper">')
        < page.index('id="fig-accuracy"')  # beside its table
        < page.index('<h2 id="gains-split-by-context-beside-matched-random-controls">')
        < page.index('id="fig-sweep"')
        < page.index('<h2 id="how-this-run-was-made">')
    )
    assert page.count('class="held"') == 4  # the four verdicts of a clear win, styled


def test_the_contents_are_the_section_headings_and_figures_in_order(results: dict[str, Any], tmp_path: Path) -> None:
    typed_results = typed(with_steerability(results, tmp_path))
    outline = PageOutline(report_html(typed_results))
    body = [(h, text) for tag, h, text in outline.headings if tag != "h1" and text != "What this run can show"]
    assert outline.links == body and all(h for h, _ in body)  # each link names a heading's id, in the page's order
    assert len({h for h, _ in body}) == len(body)  # ids unique
    texts = [text for _, _, text in outline.headings]
    assert len(texts) == len(set(texts))  # no heading twice (the steerability section and its figure's were)
    # the same headings a second way: results.md's sections (less the opening one), the figures among them
    md = [line.removeprefix("## ") for line in results_markdown(typed_results).splitlines() if line.startswith("## ")]
    assert md[0] == SCOPE_HEADING.removeprefix("## ")
    figs = set(FIGURE_TITLES.values())
    assert [t for _, t in body if t not in figs] == md[1:]
    placed = {FIGURE_TITLES[k]: FIGURE_SECTIONS.get(k) for k in FIGURE_TITLES}
    assert [t for _, t in body if t in figs and placed[t] is None] == [
        "Layer sweep",
        "Axis geometry",
        "Search histories",
    ]
    after = {t: body[i - 1][1] for i, (_, t) in enumerate(body) if t in figs}
    assert after["Histograms of the per-item margin changes"] == "Per-item steerability"
    assert after["Accuracy per axis"] == "BBQ accuracy (%), baseline / ISV / SVE, beside the paper"


def test_a_smoke_run_says_it_is_a_pipeline_check(results: dict[str, Any]) -> None:
    notice = "a pipeline check, not a result"
    smoke = report_html(typed(results))
    assert results["meta"]["budget"] == "smoke"
    assert notice in "".join(PageOutline(smoke).text) and notice in results_markdown(typed(results))
    small = typed({**results, "meta": {**META, "budget": "small"}})
    assert notice not in report_html(small) and notice not in results_markdown(small)
    scope = smoke[smoke.index('<section class="scope">') : smoke.index("</section>")]
    assert "at or below chance (33.3%, three options) on every axis" in scope  # the fixture's baseline: 40 of 120


def test_markdown_is_rendered_not_shown(results: dict[str, Any], tmp_path: Path) -> None:
    page = report_html(typed(with_steerability(results, tmp_path)))
    text = "".join(PageOutline(page).text)
    assert "*held*" not in text and "**" not in text and "`" not in text
    assert "<em>held</em>" in page and "<strong>This is a <code>smoke</code> budget run" in page
    assert "<em>Wrong-way share</em>" in page  # emphasis inside the steerability section's text


def test_every_table_scrolls_in_its_own_box_and_long_cells_wrap(results: dict[str, Any]) -> None:
    page = report_html(typed(results))
    assert page.count("<table>") == page.count('<div class="table-wrap">\n<table>') >= 5
    assert page.count("</table>") == page.count("</table>\n</div>")
    reading = "better on ambiguous items, disambiguated kept (debiasing pattern)"  # longer than LONG_CELL
    assert f'<td class="long">{reading}</td>' in page and "<td>ISV</td>" in page
    assert "overflow-x:auto" in page and "responsive" in page


def test_rendered_markdown_has_ids_escapes_raw_html_and_renders_emphasis_in_cells() -> None:
    from lens_steer.report.rendering import Anchors, render_inline, render_markdown

    anchors = Anchors()
    text = "## Gains & <b>losses</b>\n\n| a | b |\n|---|---|\n| *held* | " + "x" * 40 + " |\n\n## Gains & losses\n"
    r = render_markdown(text, anchors)
    assert [(h.level, h.anchor, h.text) for h in r.headings] == [
        (2, "gains-b-losses-b", "Gains & <b>losses</b>"),
        (2, "gains-losses", "Gains & losses"),
    ]
    assert '<h2 id="gains-b-losses-b">Gains &amp; &lt;b&gt;losses&lt;/b&gt;</h2>' in r.html and "<b>" not in r.html
    assert "<td><em>held</em></td>" in r.html and f'<td class="long">{"x" * 40}</td>' in r.html
    assert render_markdown("## Gains & losses\n", anchors).headings[0].anchor == "gains-losses-2"  # taken twice
    assert render_inline("a *held* claim, `code` and <i>") == "a <em>held</em> claim, <code>code</code> and &lt;i&gt;"
