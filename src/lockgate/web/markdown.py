"""The model card's Markdown as HTML (markdown-it-py, CommonMark with tables).

The card holds text its author wrote (the description among it), so raw HTML is not passed
through: it is escaped and shows as text. Links whose scheme could run code (``javascript:``,
``vbscript:``, ``file:``, ``data:``) stay text too (markdown-it's own ``validateLink``), and
images are not recognised, so the page fetches nothing. Headings move one level down (``#``
becomes ``<h2>``): the card sits under the page's own headings.
"""

from __future__ import annotations

from markdown_it import MarkdownIt
from markupsafe import Markup

__all__ = ["card_html"]

_MD = MarkdownIt("commonmark", {"html": False}).enable("table").disable("image")


def card_html(text: str) -> Markup:
    """``text`` (Markdown) as HTML, safe to place in a page."""
    tokens = _MD.parse(text)
    for token in tokens:
        if token.type in ("heading_open", "heading_close"):
            token.tag = f"h{min(int(token.tag[1:]) + 1, 6)}"
    return Markup(_MD.renderer.render(tokens, _MD.options, {}))  # html is off: text is escaped
