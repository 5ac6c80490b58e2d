"""``uniflow ui --export DIR``: the UI's pages as a static site with relative links.

The site opens from ``file://`` and from any sub-path of a web server (GitHub Pages, a CI
artifact). It holds every page the server has except the interactive parts: the versions
table is in version order with no sort or filter links, and each version is compared with
the one before it (``models/<name>/compare/<previous>/<version>.html``).

Layout::

    index.html                              every model
    static/ui.css
    models/<name>/index.html                versions, charts, timeline
    models/<name>/history.html              audit log
    models/<name>/<version>.html            the version's card
    models/<name>/compare/<prev>/<v>.html   a version next to the one before it

``DIR`` must be empty, missing, or an earlier export (it holds ``.uniflow-ui-export``);
files are written to a temporary name and renamed, and nothing is written through a
symlink.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import InvalidPathError
from . import views
from .cache import CachedRegistry
from .render import STATIC, Links, page_file, render_page

if TYPE_CHECKING:  # pragma: no cover
    from .. import RegistryReader

__all__ = ["ExportReport", "export_site", "MARKER"]

MARKER = ".uniflow-ui-export"


@dataclass(frozen=True)
class ExportReport:
    """What :func:`export_site` wrote."""

    path: str
    pages: int
    models: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "pages": self.pages, "models": self.models}


def _check_dest(dest: Path) -> None:
    if dest.is_symlink():
        raise InvalidPathError(f"refusing to export the UI through symlink {dest}")
    if dest.exists():
        if not dest.is_dir():
            raise InvalidPathError(f"{dest} exists and is not a directory")
        if any(dest.iterdir()) and not (dest / MARKER).is_file():
            raise InvalidPathError(
                f"{dest} is not empty and holds no earlier UI export ({MARKER}); choose another directory"
            )


def _write(root: Path, rel: str, text: str) -> None:
    """Write ``root/rel`` via a temporary file and rename, never through a symlink."""
    target = root / rel
    parent = target.parent
    for p in [*reversed(target.relative_to(root).parents)][1:]:
        d = root / p
        if d.is_symlink():
            raise InvalidPathError(f"refusing to write through symlink {d}")
    parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise InvalidPathError(f"refusing to replace {target}: not a regular file")
    fd, tmp = tempfile.mkstemp(prefix=".uniflow-tmp-", dir=parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def export_site(
    registry: RegistryReader,
    dest: str | os.PathLike[str],
    *,
    progress: Callable[[int, int], None] | None = None,
) -> ExportReport:
    """Write the static site of ``registry`` to ``dest``; ``progress(done, total)`` counts models."""
    root = Path(dest).absolute()
    _check_dest(root)
    root.mkdir(parents=True, exist_ok=True)
    generated = datetime.now(UTC)
    repo = registry.root.name
    reader = CachedRegistry(registry)
    reader.refresh()
    pages = 0

    def page(rel: str, template: str, **ctx: Any) -> None:
        nonlocal pages
        links = Links(static_depth=rel.count("/"))
        _write(root, rel, render_page(template, links, repo=repo, generated=generated, api=None, **ctx))
        pages += 1

    _write(root, MARKER, "written by uniflow ui --export; the directory may be replaced by the next export\n")
    (root / "static").mkdir(exist_ok=True)
    for asset in STATIC.iterdir():
        if asset.is_file():
            _write(root, f"static/{asset.name}", asset.read_text(encoding="utf-8"))
    rows = views.overview(reader)
    page(page_file("overview"), "overview.html", rows=rows, crumbs=[])
    for done, row in enumerate(rows):
        name = row.name
        data = views.model_page(reader, name)
        model_link = Links(2).model(name)
        page(page_file("model", name), "model.html", crumbs=[(name, None)], **data)
        events, lifecycle_notice = views.readable_history(reader, name)  # unreadable: no events
        page(
            page_file("history", name),
            "history.html",
            name=name,
            events=events[::-1],
            sigs=views.signatures(reader, name),
            lifecycle_notice=lifecycle_notice,
            crumbs=[(name, model_link), ("history", None)],
        )
        for mv in data["all_versions"]:
            version_data = views.version_page(reader, name, mv.version)
            page(
                page_file("version", name, (mv.version,)),
                "version.html",
                crumbs=[(name, model_link), (mv.version, None)],
                **version_data,
            )
            prev = version_data["prev"]
            if prev is not None:
                rel = page_file("compare", name, (prev, mv.version))
                view = views.compare_page(reader, name, [prev, mv.version])
                page(
                    rel,
                    "compare.html",
                    name=name,
                    view=view,
                    crumbs=[(name, Links(rel.count("/")).model(name)), ("compare", None)],
                )
        if progress:
            progress(done + 1, len(rows))
    return ExportReport(str(root), pages, len(rows))
