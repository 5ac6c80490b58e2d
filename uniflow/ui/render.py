"""HTML pages from Jinja2 templates (autoescaped), with links for the server or the static site.

The same templates serve both: :class:`Links` builds root-relative URLs for ``uniflow ui``
and relative file paths (``../../models/m/v1.0.0.html``) for ``uniflow ui --export``, so an
exported site works from ``file://`` and from any sub-path of a web server.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from .. import __version__
from .._format import human_size
from .._views.charts import format_number
from .._views.markdown import render_markdown

__all__ = ["Links", "page_file", "render_page", "when"]

TEMPLATES = Path(__file__).resolve().parent / "templates"
STATIC = Path(__file__).resolve().parent / "static"

#: Content-Security-Policy of every page: no script at all, styles from the site only.
CSP = "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'"


def _seg(text: str) -> str:
    return quote(text, safe="")


def page_file(kind: str, name: str = "", versions: tuple[str, ...] = ()) -> str:
    """Where the static site keeps a page (a path relative to the site's root)."""
    if kind == "overview":
        return "index.html"
    if kind == "model":
        return f"models/{name}/index.html"
    if kind == "history":
        return f"models/{name}/history.html"
    if kind == "version":
        return f"models/{name}/{versions[0]}.html"
    if kind == "compare":
        return f"models/{name}/compare/" + "/".join(versions) + ".html"
    raise ValueError(kind)


class Links:
    """URLs of every page. ``static_depth`` is None for the server; for the static site it is
    the number of directories between the current page and the site's root."""

    def __init__(self, static_depth: int | None = None) -> None:
        self.static = static_depth is not None
        self._up = "../" * (static_depth or 0)

    def _file(self, kind: str, name: str = "", versions: tuple[str, ...] = ()) -> str:
        path = page_file(kind, name, versions)
        return self._up + "/".join(_seg(p) for p in path.split("/"))

    def overview(self) -> str:
        return self._file("overview") if self.static else "/"

    def model(self, name: str, **query: Any) -> str:
        if self.static:
            return self._file("model", name)
        q = {k: v for k, v in query.items() if v not in (None, "", False)}
        return f"/models/{_seg(name)}" + (f"?{urlencode(q)}" if q else "")

    def version(self, name: str, version: str) -> str:
        if self.static:
            return self._file("version", name, (version,))
        return f"/models/{_seg(name)}/{_seg(version)}"

    def history(self, name: str) -> str:
        return self._file("history", name) if self.static else f"/models/{_seg(name)}/history"

    def compare(self, name: str, versions: list[str] | tuple[str, ...]) -> str:
        if self.static:
            return self._file("compare", name, tuple(versions))
        return f"/models/{_seg(name)}/compare?" + urlencode([("v", v) for v in versions])

    def compare_action(self, name: str) -> str:
        """The compare form's target (server only: the form sends ``?v=A&v=B``)."""
        return f"/models/{_seg(name)}/compare"

    def asset(self, filename: str) -> str:
        return f"{self._up}static/{filename}" if self.static else f"/static/{filename}"

    def api(self, path: str) -> str | None:
        """The JSON twin of a page (server only)."""
        return None if self.static else f"/api/{path}"


def when(value: object) -> str:
    """A datetime as ``2024-05-01 12:00 UTC`` (an ISO string is parsed first)."""
    if isinstance(value, str):
        text = value
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            return text
    if not isinstance(value, datetime):
        return "-"
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _iso(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value or "")


def _stage_class(stage: object) -> str:
    text = str(stage or "none").lower()
    return "stage-" + "".join(c for c in text if c.isascii() and (c.isalnum() or c in "_-"))


def _cell(value: object, key: str = "") -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and ("bytes" in key or key == "size"):
        return human_size(value)
    return format_number(value)


@lru_cache(maxsize=1)
def environment() -> Any:
    """The Jinja2 environment: autoescaping on for every template, undefined names are errors."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        size=human_size,
        when=when,
        iso=_iso,
        num=format_number,
        cell=_cell,
        stage_class=_stage_class,
        markdown=render_markdown,
        short=lambda s: str(s or "")[:10],
    )
    env.globals.update(uniflow_version=__version__, csp=CSP)
    return env


def render_page(template: str, links: Links, **context: Any) -> str:
    """Render ``templates/<template>`` with ``url`` (a :class:`Links`) and ``context``."""
    return str(environment().get_template(template).render(url=links, **context))
