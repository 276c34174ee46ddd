"""report.html from typed results: what the run can show, a table of contents, then the Markdown sections (rendered
by lens_steer.report.rendering: raw HTML in the text escaped, never passed through) with the figures beside the
section they belong to, set in Jinja2 templates (autoescaped) with one inline copy of plotly.js; and `write_report`,
which writes report.html and results.md."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lens_steer.files import atomic_write_text
from lens_steer.pipeline.results import Results
from lens_steer.report.claims import Claim, judge_claims
from lens_steer.report.figures import FIGURE_SECTIONS, FIGURE_TEXT, FIGURE_TITLES, figures
from lens_steer.report.markdown import CLAIMS_HEADING, claims_rule, results_markdown, sections
from lens_steer.report.plots import sweep_heatmap, write_figure
from lens_steer.report.rendering import Anchors, Heading, render_inline, render_markdown

# the body's sections in reading order ("claims" is the template's; the others are lens_steer.report.markdown's);
# the figures that stand alone (no FIGURE_SECTIONS entry) come before "run", the last
BODY: tuple[str, ...] = (
    "ground_truth",
    "claims",
    "capability",
    "paper_table",
    "v2_table",
    "gains",
    "steerability",
    "ood",
    "mmlu",
)
FIGURE_HEIGHT = 480  # pixels, for a figure whose layout sets none
PLOTLY_CONFIG: dict[str, Any] = {"responsive": True, "displayModeBar": False}  # figures follow the page width


@dataclasses.dataclass(frozen=True)
class FigureBlock:
    """One figure's place in the page: id, heading (level, anchor, title), caption and the plotly div ("" when its
    stage did not run)."""

    key: str
    heading: Heading
    text: str
    div: str


@dataclasses.dataclass(frozen=True)
class ContentsEntry:
    """A line of the table of contents: a section's heading and the headings (figures) under it."""

    heading: Heading
    children: tuple[Heading, ...]


@dataclasses.dataclass(frozen=True)
class Block:
    """One block of the page's body: its HTML and the headings it holds, in order."""

    html: str
    headings: tuple[Heading, ...]


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("lens_steer.report", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )


def _figure_blocks(results: Results, anchors: Anchors) -> dict[str, FigureBlock]:
    figs = figures(results)
    out = {}
    for key, title in FIGURE_TITLES.items():
        div = (
            figs[key].to_html(
                full_html=False,
                include_plotlyjs=False,
                div_id=f"fig-{key}",
                config=PLOTLY_CONFIG,
                default_height=f"{FIGURE_HEIGHT}px",
            )
            if key in figs
            else ""
        )
        level = 3 if key in FIGURE_SECTIONS else 2
        out[key] = FigureBlock(key, Heading(level, anchors.new(title), title), FIGURE_TEXT[key], div)
    return out


def _claims_block(env: Any, claims: Sequence[Claim], anchors: Anchors) -> Block:
    title = CLAIMS_HEADING.removeprefix("## ")
    heading = Heading(2, anchors.new(title), title)
    html = env.get_template("claims.html.j2").render(heading=heading, rule=render_inline(claims_rule()), claims=claims)
    return Block(html, (heading,))


def body_blocks(
    results: Results, markdown: Mapping[str, str], claims: Sequence[Claim], anchors: Anchors
) -> list[Block]:
    """The page's body in reading order: each section of `BODY` that has content (`markdown`: each section's text by
    key), each followed by its figures, then the figures that stand alone, then how the run was made."""
    env = _environment()
    figs = _figure_blocks(results, anchors)

    def figure(block: FigureBlock) -> Block:
        return Block(env.get_template("figure.html.j2").render(f=block), (block.heading,))

    def section(key: str) -> Block:
        r = render_markdown(markdown[key], anchors)
        return Block(r.html, r.headings)

    out: list[Block] = []
    for key in BODY:
        if key == "claims":
            out.append(_claims_block(env, claims, anchors))
        elif markdown.get(key):
            out.append(section(key))
        else:
            continue
        out += [figure(figs[k]) for k, where in FIGURE_SECTIONS.items() if where == key]
    out += [figure(f) for k, f in figs.items() if k not in FIGURE_SECTIONS]
    return out + [section("run")]


def contents(headings: Sequence[Heading]) -> list[ContentsEntry]:
    """The table of contents of the body's headings: each h2 with the h3s that follow it (deeper levels left out)."""
    out: list[ContentsEntry] = []
    for h in headings:
        if h.level == 2 or (h.level == 3 and not out):
            out.append(ContentsEntry(h, ()))
        elif h.level == 3:
            out[-1] = ContentsEntry(out[-1].heading, out[-1].children + (h,))
    return out


def report_html(results: Results) -> str:
    """A self-contained HTML report: what the run can show, the contents, (the ground truth,) the claims with the
    forest plot, capability, the details with their figures, and how the run was made."""
    import plotly.offline

    claims = judge_claims(results)
    markdown = {s.key: s.markdown for s in sections(results, claims)}
    anchors = Anchors()
    head = render_markdown(markdown["head"], anchors)
    scope = render_markdown(markdown["scope"], anchors)
    body = body_blocks(results, markdown, claims, anchors)
    return (
        _environment()
        .get_template("report.html.j2")
        .render(
            model=results.meta.model if results.meta is not None else "unknown model",
            plotly_js=plotly.offline.get_plotlyjs(),
            head=head.html,
            scope=scope.html,
            contents=contents([h for b in body for h in b.headings]),
            body=[b.html for b in body],
        )
    )


def write_report(results: Results, out_dir: str | Path) -> dict[str, Path]:
    """Write `out_dir/report.html` and `out_dir/results.md` atomically; returns {"html": path, "markdown": path}."""
    out = Path(out_dir)
    md = results_markdown(results)
    page = report_html(results)
    written = {
        "html": atomic_write_text(out / "report.html", page),
        "markdown": atomic_write_text(out / "results.md", md),
    }
    if results.sweep is not None:  # the layer sweep's heatmap beside its csv
        s = results.sweep
        fig = sweep_heatmap(s.rows, s.baseline, title=f"{s.axis}: validation {s.metric} by layer x coefficient")
        written["sweep"] = write_figure(fig, out / "sweep" / "sweep.html")
    return written


__all__ = ["BODY", "Block", "ContentsEntry", "FigureBlock", "body_blocks", "contents", "report_html", "write_report"]
