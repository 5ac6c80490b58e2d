"""Model cards as sanitised HTML: Markdown through markdown-it-py with raw HTML switched off.

``html=False`` makes markdown-it escape every ``<tag>`` in the source (a ``<script>`` or an
``<img onerror=...>`` comes out as text); its link validator drops ``javascript:``,
``vbscript:``, ``file:`` and ``data:`` URLs; images are switched off so that a card never
makes the browser fetch anything. Without markdown-it-py the text is escaped into a
``<pre>``.
"""

from __future__ import annotations

from functools import lru_cache
from html import escape
from typing import Any

from .charts import Html

__all__ = ["render_markdown"]


@lru_cache(maxsize=1)
def _parser() -> Any:
    from markdown_it import MarkdownIt

    md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})
    md.disable(["image", "html_inline", "html_block"], ignoreInvalid=True)
    return md


def render_markdown(text: str) -> Html:
    """``text`` (a model description or card) as safe HTML."""
    try:
        md = _parser()
    except ImportError:
        return Html(f'<pre class="card-text">{escape(text, quote=True)}</pre>')
    return Html(md.render(text))
