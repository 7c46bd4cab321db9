"""The render stage: a transcript as a terminal card, Markdown, a self-contained HTML page, or JSON.

One card model (``show/card.py``: typed sections in one order) and three small writers (``text``, ``markdown``,
``html``); JSON is the transcript itself.
"""

from __future__ import annotations

from localpanel.runs.transcript import Transcript
from localpanel.show import html as html_writer
from localpanel.show import markdown as markdown_writer
from localpanel.show import text as text_writer
from localpanel.show.card import card_of, summary_parts, summary_text
from localpanel.show.markdown import md_text

__all__ = ["FORMATS", "render", "card", "markdown", "page", "md_text", "summary_parts", "summary_text"]

FORMATS = ("text", "markdown", "html", "json")


def render(t: Transcript, fmt: str = "text", *, color: bool = False, width: int = 88) -> str:
    if fmt == "json":
        return t.model_dump_json(indent=2) + "\n"
    if fmt == "markdown":
        return markdown(t)
    if fmt == "html":
        return page(t)
    return card(t, color=color, width=width)


def card(t: Transcript, *, color: bool = False, width: int = 88) -> str:
    """The terminal result card."""
    return text_writer.write(card_of(t), color=color, width=width)


def markdown(t: Transcript) -> str:
    return markdown_writer.write(card_of(t))


def page(t: Transcript) -> str:
    """A self-contained HTML page (no scripts, no external assets); all text escaped."""
    return html_writer.write(card_of(t))
