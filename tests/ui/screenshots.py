"""Screenshots of every page of the UI, for docs/ui/ (``python -m tests.ui.screenshots [DIR]``).

Builds the demo registry (tests/ui/_demo.py) in a temporary directory, starts
``uniflow ui`` on a free loopback port and photographs each page with Debian's Chromium.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.ui._browser import ROOT, launch, ui_server
from tests.ui._demo import build_demo

PAGES = {
    "overview": "",
    "model": "models/sentiment_classifier",
    "version": "models/sentiment_classifier/v1.2.0",
    "compare": "models/sentiment_classifier/compare?v=v1.0.0&v=v1.2.0&v=v1.5.0",
    "history": "models/sentiment_classifier/history",
}


def take(repo: Path, out: Path, browser: Any = None, width: int = 1200) -> list[Path]:
    """Photograph every page of ``repo``'s UI into ``out`` (with ``browser``, or a Chromium
    launched here); returns the files written."""
    if browser is None:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            own = launch(p)
            try:
                return take(repo, out, own, width)
            finally:
                own.close()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with ui_server(repo) as (url, _proc):
        page = browser.new_page(viewport={"width": width, "height": 800})
        try:
            for name, path in PAGES.items():
                page.goto(url + path)
                target = out / f"{name}.png"
                page.screenshot(path=str(target), full_page=True)
                written.append(target)
        finally:
            page.close()
    return written


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else ROOT / "docs" / "ui"
    with tempfile.TemporaryDirectory() as tmp:
        repo = build_demo(Path(tmp) / "demo")
        for f in take(repo, out):
            print(f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
