"""report.html from typed results: the Markdown sections rendered by markdown-it-py (raw HTML in the text is
escaped, never passed through) and the figures, set in a Jinja2 template (autoescaped) with one inline copy of
plotly.js; and `write_report`, which writes report.html and results.md."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from lens_steer.files import atomic_write_text
from lens_steer.pipeline.results import Results
from lens_steer.report.claims import judge_claims
from lens_steer.report.figures import FIGURE_TEXT, FIGURE_TITLES, figures
from lens_steer.report.markdown import CLAIMS_HEADING, claims_rule, results_markdown, sections
from lens_steer.report.plots import sweep_heatmap, write_figure


@dataclasses.dataclass(frozen=True)
class FigureBlock:
    """One figure's place in the page: id, title, caption and the plotly div ("" when its stage did not run)."""

    key: str
    title: str
    text: str
    div: str


def markdown_to_html(text: str) -> str:
    """CommonMark with tables; raw HTML in `text` is escaped (the report's text holds data: model names, reasons)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def report_html(results: Results) -> str:
    """A self-contained HTML report: (ground truth,) claims, the forest plot, capability, then the details and figures."""
    import jinja2
    import plotly.offline

    claims = judge_claims(results)
    rendered = {s.key: markdown_to_html(s.markdown) for s in sections(results, claims) if s.key != "claims"}
    parts = {
        key: rendered.get(key, "")
        for key in (
            "head",
            "ground_truth",
            "capability",
            "paper_table",
            "v2_table",
            "gains",
            "steerability",
            "ood",
            "mmlu",
        )
    }
    figs = figures(results)
    blocks = [
        FigureBlock(
            k,
            FIGURE_TITLES[k],
            FIGURE_TEXT[k],
            figs[k].to_html(full_html=False, include_plotlyjs=False, div_id=f"fig-{k}") if k in figs else "",
        )
        for k in FIGURE_TITLES
    ]
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("lens_steer.report", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    return env.get_template("report.html.j2").render(
        model=results.meta.model if results.meta is not None else "unknown model",
        plotly_js=plotly.offline.get_plotlyjs(),
        sections=parts,
        claims_heading=CLAIMS_HEADING.removeprefix("## "),
        claims_rule=claims_rule(),
        claims=claims,
        figures=blocks,
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


__all__ = ["FigureBlock", "markdown_to_html", "report_html", "write_report"]
