"""The UI in a real browser: Debian's Chromium driven by Playwright (skipped, with the reason,
where either is missing; .ci/run installs both).

Clicks through overview -> model -> version -> compare -> history, counts chart points,
plants ``<script>`` and ``onerror=`` in descriptions, tags, params and metric keys and checks
they never run, fails on any console error, and walks the exported site from file://.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ui._browser import browser_missing, launch, run_cli, ui_server
from tests.ui._demo import PLANTED_ONERROR, PLANTED_SCRIPT

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing())),
]

SENTIMENT_VERSIONS = [f"v1.{i}.0" for i in range(6)]


class Watched:
    """A page whose console errors, page errors and dialogs are recorded."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.problems: list[str] = []
        self.dialogs: list[str] = []
        page.on(
            "console",
            lambda m: (
                self.problems.append(f"console {m.type}: {m.text}")
                if m.type in ("error", "warning")
                else None
            ),
        )
        page.on("pageerror", lambda e: self.problems.append(f"pageerror: {e}"))
        page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url}"))

        def dialog(d: Any) -> None:
            self.dialogs.append(d.message)
            d.dismiss()

        page.on("dialog", dialog)

    def clean(self) -> None:
        assert self.problems == [], self.problems
        assert self.dialogs == [], self.dialogs
        assert self.page.evaluate("window.__pwned") is None


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = launch(p)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def server(demo_repo: Path) -> Iterator[str]:
    with ui_server(demo_repo) as (url, _proc):
        yield url


@pytest.fixture
def page(browser: Any) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(20_000)
    try:
        yield Watched(context.new_page())
    finally:
        context.close()


def _click(page: Any, selector: str) -> None:
    """Click a link and wait for the page it opens to finish loading: reading the table (or
    clicking on) before that raced the navigation on a loaded machine (an empty table, a
    stylesheet request aborted by the next click)."""
    page.click(selector)
    page.wait_for_load_state("load")


def _versions_in_table(page: Any) -> list[str]:
    return page.locator("table.versions tbody tr[data-version]").evaluate_all(
        "rows => rows.map(r => r.dataset.version)"
    )


def test_click_through_every_page(page: Watched, server: str, tmp_path: Path) -> None:
    p = page.page
    p.goto(server)
    assert p.title() == "Models · uniflow"
    assert p.locator("tr[data-model]").count() == 3
    # the overview's sparkline: one marked point per version, each with its version and a title
    spark = p.locator("tr[data-model=sentiment_classifier] svg.sparkline circle.point")
    assert spark.evaluate_all("cs => cs.map(c => c.dataset.version)") == SENTIMENT_VERSIONS
    p.screenshot(path=str(tmp_path / "overview.png"))

    _click(p, "a.model-link:text('sentiment_classifier')")
    p.wait_for_url("**/models/sentiment_classifier")
    assert _versions_in_table(p) == SENTIMENT_VERSIONS
    charts = p.locator("svg.metric-chart")
    assert charts.count() == 3  # accuracy, f1, loss
    for i in range(charts.count()):
        chart = charts.nth(i)
        versions = chart.locator("circle.point").evaluate_all("cs => cs.map(c => c.dataset.version)")
        assert versions == SENTIMENT_VERSIONS
        titles = chart.locator("circle.point > title").evaluate_all("ts => ts.map(t => t.textContent)")
        assert len(titles) == 6
        assert all(t.startswith(v + ":") for t, v in zip(titles, SENTIMENT_VERSIONS, strict=True))
    assert p.locator("svg.timeline g.span[data-version]").count() >= 3
    p.screenshot(path=str(tmp_path / "model.png"), full_page=True)

    _click(p, "a.version-link:text('v1.2.0')")
    p.wait_for_url("**/models/sentiment_classifier/v1.2.0")
    assert p.locator("main > h1").inner_text().startswith("sentiment_classifier v1.2.0")
    assert p.locator(".markdown h1").inner_text() == "Sentiment classifier"  # the card, rendered
    assert "training: tweak 2" in p.locator("dl.lineage").inner_text()  # code commit and its message
    assert "model.safetensors" in p.locator("table.files").inner_text()

    _click(p, "a.compare-prev")
    p.wait_for_url("**/compare?v=v1.1.0&v=v1.2.0")
    assert p.locator("table.compare thead th").all_inner_texts()[1:] == ["v1.1.0", "v1.2.0"]
    assert p.locator("table.compare .delta.better").count() >= 1

    p.goto(server + "models/sentiment_classifier")
    for v in ("v1.0.0", "v1.3.0", "v1.5.0"):
        p.check(f"input[name=v][value='{v}']")
    _click(p, "button[type=submit]")
    p.wait_for_url("**/compare?v=v1.0.0&v=v1.3.0&v=v1.5.0")
    assert p.locator("table.compare thead th").count() == 4
    assert p.locator("text=Code commits between them").count() == 1

    _click(p, "nav.crumbs a:text('sentiment_classifier')")
    _click(p, "a:text('History')")
    p.wait_for_url("**/models/sentiment_classifier/history")
    rows = p.locator("table.events tbody tr")
    assert rows.count() == 13  # 6 registers, 4 promotions, a rollback, an archive, a promotion
    assert "rollback" in p.locator("table.events").inner_text()
    _click(p, "a.brand")
    p.wait_for_url(server)
    page.clean()


def test_sort_and_filter(page: Watched, server: str) -> None:
    p = page.page
    p.goto(server + "models/sentiment_classifier")
    _click(p, "table.versions th a.sort:text('loss')")
    values = p.locator("table.versions tbody tr td:nth-child(6)").all_inner_texts()
    assert values == sorted(values, key=float, reverse=True)
    _click(p, "a.filter:text('archived')")
    assert sorted(_versions_in_table(p)) == ["v1.1.0", "v1.2.0"]
    _click(p, "a.filter:text('all')")
    assert len(_versions_in_table(p)) == 6
    page.clean()


def test_planted_script_and_onerror_never_run(page: Watched, server: str) -> None:
    p = page.page
    for path in (
        "",
        "models/xss_probe",
        "models/xss_probe/v1.0.0",
        "models/xss_probe/v1.0.1",
        "models/xss_probe/compare?v=v1.0.0&v=v1.0.1",
        "models/xss_probe/history",
    ):
        p.goto(server + path)
        p.wait_for_load_state("load")
        assert p.locator("script").count() == 0
        assert p.locator("main img").count() == 0
    p.goto(server + "models/xss_probe/v1.0.0")
    text = p.locator("main").inner_text()
    assert PLANTED_SCRIPT in text and PLANTED_ONERROR in text  # shown as text
    p.click("text=click")  # the javascript: link was dropped by the sanitiser
    page.clean()


def test_writes_are_refused(page: Watched, server: str) -> None:
    for method in ("post", "put", "delete", "patch"):
        response = getattr(page.page.request, method)(server + "models/sentiment_classifier", data="x=1")
        assert response.status == 405


def test_no_console_errors_on_error_pages(page: Watched, server: str) -> None:
    response = page.page.goto(server + "models/nope")
    assert response is not None and response.status == 404
    assert "not found" in page.page.locator(".error-message").inner_text()
    page.problems = [m for m in page.problems if "404" not in m]  # the 404 status itself is logged
    page.clean()


def test_exported_site_works_from_file_urls(page: Watched, demo_repo: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    proc = run_cli(demo_repo, "ui", "--export", str(site))
    assert proc.returncode == 0, proc.stderr
    p = page.page
    p.goto((site / "index.html").as_uri())
    assert (
        p.evaluate("getComputedStyle(document.querySelector('header.top')).display") == "flex"
    )  # CSS loaded
    _click(p, "a.model-link:text('sentiment_classifier')")
    assert p.url.endswith("/models/sentiment_classifier/index.html")
    assert _versions_in_table(p) == SENTIMENT_VERSIONS
    assert p.locator("svg.metric-chart").first.locator("circle.point").count() == 6
    _click(p, "a.version-link:text('v1.3.0')")
    assert p.url.endswith("/models/sentiment_classifier/v1.3.0.html")
    _click(p, "a.compare-prev")
    assert p.url.endswith("/models/sentiment_classifier/compare/v1.2.0/v1.3.0.html")
    assert p.locator("table.compare thead th").all_inner_texts()[1:] == ["v1.2.0", "v1.3.0"]
    _click(p, "nav.crumbs a:text('sentiment_classifier')")
    _click(p, "a:text('History')")
    assert p.url.endswith("/models/sentiment_classifier/history.html")
    _click(p, "table.events a:text('v1.0.0') >> nth=0")
    assert p.url.endswith("/models/sentiment_classifier/v1.0.0.html")
    _click(p, "a.brand")
    assert p.url.endswith("/index.html")
    p.goto((site / "models" / "xss_probe" / "v1.0.0.html").as_uri())
    assert PLANTED_SCRIPT in p.locator("main").inner_text()
    page.clean()


def test_screenshots_of_every_page(browser: Any, demo_repo: Path, tmp_path: Path) -> None:
    """What docs/ui/ holds is made by the same code (python -m tests.ui.screenshots)."""
    from tests.ui.screenshots import PAGES, take

    files = take(demo_repo, tmp_path, browser)
    assert [f.stem for f in files] == list(PAGES)
    for f in files:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 10_000


def test_server_stops_on_sigterm(demo_repo: Path) -> None:
    with ui_server(demo_repo) as (_url, proc):
        proc.terminate()
        assert proc.wait(timeout=15) is not None
    assert proc.returncode is not None and proc.returncode != -subprocess.signal.SIGKILL  # type: ignore[attr-defined]
