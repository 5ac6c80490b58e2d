"""The registry seen in a browser or a notebook (``uniflow ui``; see docs/ui.md).

Built only on the public API (``ModelRegistry`` and the values it returns). Importing this
package is cheap: the web stack (Starlette, Uvicorn, Jinja2) loads inside
:func:`create_app`, :func:`serve` and :func:`export_site`, and pandas/matplotlib inside the
notebook helpers, so ``import uniflow`` and ``uniflow --version`` never pay for them.

- :mod:`uniflow._views.charts`: inline SVG charts (standard library only).
- :mod:`uniflow.ui.views`: what each page shows, from the registry.
- :mod:`uniflow.ui.render`: Jinja2 templates and links (server or static site).
- :mod:`uniflow.ui.app` / :mod:`uniflow.ui.server`: the read-only web app and its server.
- :mod:`uniflow.ui.export`: the same pages as a static site.
- :mod:`uniflow._views.notebook`: ``_repr_html_`` renderings, pandas frames, matplotlib plots.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["create_app", "export_site", "serve"]

if TYPE_CHECKING:  # pragma: no cover
    from .app import create_app
    from .export import export_site
    from .server import serve

_LAZY = {"create_app": ".app", "export_site": ".export", "serve": ".server"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'uniflow.ui' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module, __name__), name)
