"""The report's Markdown as HTML: CommonMark with tables (markdown-it-py), raw HTML in the text escaped, every heading
given a unique id for the table of contents, and every table set in its own horizontally scrolling box (short cells
on one line, long ones wrapping)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any

TABLE_BOX = "table-wrap"  # the class of the box each table scrolls in
LONG_CELL = 32  # characters above which a table cell wraps (class "long"); shorter cells keep to one line


@dataclasses.dataclass(frozen=True)
class Heading:
    """A heading of the page: its level (1-6), its element id and its plain text."""

    level: int
    anchor: str
    text: str


class Anchors:
    """Hands out the page's element ids: a slug of each heading's text, made unique with -2, -3, ..."""

    def __init__(self) -> None:
        self.taken: set[str] = set()

    def new(self, text: str) -> str:
        """A fresh id for a heading reading `text`."""
        base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
        anchor, k = base, 1
        while anchor in self.taken:
            k += 1
            anchor = f"{base}-{k}"
        self.taken.add(anchor)
        return anchor


@dataclasses.dataclass(frozen=True)
class RenderedMarkdown:
    """A Markdown text as HTML, with the headings it holds in order."""

    html: str
    headings: tuple[Heading, ...]


def _parser() -> Any:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False}).enable("table")

    def table_open(renderer: Any, tokens: Sequence[Any], idx: int, options: Any, env: Any) -> str:
        return f'<div class="{TABLE_BOX}">\n' + renderer.renderToken(tokens, idx, options, env)

    def table_close(renderer: Any, tokens: Sequence[Any], idx: int, options: Any, env: Any) -> str:
        return renderer.renderToken(tokens, idx, options, env) + "</div>\n"

    def cell_open(renderer: Any, tokens: Sequence[Any], idx: int, options: Any, env: Any) -> str:
        if len(tokens[idx + 1].content) > LONG_CELL:
            tokens[idx].attrJoin("class", "long")
        return renderer.renderToken(tokens, idx, options, env)

    md.add_render_rule("table_open", table_open)
    md.add_render_rule("table_close", table_close)
    md.add_render_rule("td_open", cell_open)
    md.add_render_rule("th_open", cell_open)
    return md


def _plain(inline: Any) -> str:
    """The text an inline token shows (emphasis and code marks dropped)."""
    return "".join(c.content for c in inline.children or () if c.type in ("text", "code_inline", "softbreak"))


def render_markdown(text: str, anchors: Anchors) -> RenderedMarkdown:
    """`text` as HTML, each heading with an id from `anchors`; raw HTML in `text` is escaped (the report's text holds
    data: model names, reasons)."""
    md = _parser()
    tokens = md.parse(text)
    headings = []
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open":
            title = _plain(tokens[i + 1])
            anchor = anchors.new(title)
            tok.attrSet("id", anchor)
            headings.append(Heading(int(tok.tag[1]), anchor, title))
    return RenderedMarkdown(md.renderer.render(tokens, md.options, {}), tuple(headings))


def render_inline(text: str) -> str:
    """One paragraph's Markdown (emphasis, code) as inline HTML, raw HTML escaped."""
    return _parser().renderInline(text)


__all__ = ["LONG_CELL", "TABLE_BOX", "Anchors", "Heading", "RenderedMarkdown", "render_inline", "render_markdown"]
