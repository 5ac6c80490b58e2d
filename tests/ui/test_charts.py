"""The SVG charts, the Markdown sanitiser, the stage timeline and the static links (no server)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from uniflow._views.charts import (
    Point,
    Span,
    StageMark,
    delta_direction,
    format_number,
    metric_chart,
    sparkline,
    timeline,
)
from uniflow._views.markdown import render_markdown
from uniflow.ui.render import Links, page_file
from uniflow.ui.views import stage_spans

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def _points(n: int) -> list[Point]:
    return [Point(f"v1.{i}.0", 0.5 + i / 100, "production" if i == 2 else "development") for i in range(n)]


def test_metric_chart_has_one_point_per_version_with_version_and_title() -> None:
    svg = metric_chart("accuracy", _points(7), [StageMark("v1.2.0", "production", T0)])
    points = re.findall(
        r'<circle class="point [^"]*"[^>]*data-version="([^"]+)"[^>]*><title>([^<]+)</title>', svg
    )
    assert [v for v, _ in points] == [f"v1.{i}.0" for i in range(7)]
    assert all(title.startswith(f"{v}: accuracy = ") for v, title in points)
    assert "stage-production" in svg and 'data-stage-change="v1.2.0"' in svg
    assert svg.startswith("<svg") and svg.endswith("</svg>")


def test_chart_skips_non_finite_values_and_draws_a_single_point() -> None:
    svg = metric_chart("loss", [Point("v1", float("nan")), Point("v2", 0.3)])
    assert svg.count("<circle") == 1 and 'data-version="v2"' in svg
    assert "no values" in metric_chart("loss", [])


def test_chart_escapes_every_string() -> None:
    evil = '<img src=x onerror="alert(1)">'
    svg = metric_chart(evil, [Point(evil, 1.0, evil)], [StageMark(evil, evil, T0)])
    svg += sparkline(evil, [Point(evil, 1.0)])
    svg += timeline([Span(evil, evil, T0)], T0 + timedelta(days=1))
    assert "<img" not in svg and 'onerror="' not in svg
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in svg


def test_sparkline_marks_every_point() -> None:
    svg = sparkline("f1", _points(5))
    assert svg.count('class="point') == 5 and svg.count("<title>") == 6


def test_format_number() -> None:
    assert format_number(0.123456) == "0.1235"
    assert format_number(3) == "3"
    assert format_number(None) == "-"
    assert format_number(float("inf")) == "-"
    assert format_number(True) == "true"


def test_markdown_is_sanitised() -> None:
    html = render_markdown(
        "# Card\n<script>window.__pwned=1</script>\n\n<img src=x onerror=alert(1)>\n\n"
        "[bad](javascript:alert(1)) [ok](https://example.com) ![pic](https://example.com/x.png) **bold**"
    )
    assert "<script" not in html and "<img" not in html
    assert "&lt;script&gt;" in html and "onerror=alert(1)&gt;" in html
    assert 'href="javascript:' not in html
    assert '<a href="https://example.com">ok</a>' in html and "<strong>bold</strong>" in html
    assert html.__html__() == str(html)


class _E:
    def __init__(
        self,
        seq: int,
        action: str,
        version: str,
        frm: str | None,
        to: str | None,
        displaced: str | None = None,
    ) -> None:
        self.seq, self.action, self.version, self.from_stage, self.to_stage = seq, action, version, frm, to
        self.displaced, self.at = displaced, T0 + timedelta(hours=seq)


def test_stage_spans_replay_promotions_and_rollback() -> None:
    events = [
        _E(1, "register", "v1", None, "development"),
        _E(2, "register", "v2", None, "development"),
        _E(3, "promote", "v1", "development", "production"),
        _E(4, "promote", "v2", "development", "staging"),
        _E(5, "promote", "v2", "staging", "production", displaced="v1"),
        _E(6, "rollback", "v1", "archived", "production", displaced="v2"),
    ]
    single = {"development": False, "staging": True, "production": True, "archived": False}
    spans = stage_spans(events, single)  # type: ignore[arg-type]
    got = [(s.stage, s.version, s.start_seq, s.end_seq) for s in spans]
    assert got == [
        ("production", "v1", 3, 5),
        ("production", "v2", 5, 6),
        ("production", "v1", 6, None),
        ("staging", "v2", 4, 5),
    ]
    svg = timeline(spans, T0 + timedelta(days=1))
    assert svg.count('class="span ') == 4 and 'data-version="v2"' in svg


def test_delta_direction() -> None:
    assert delta_direction("accuracy", 0.1) == "better"
    assert delta_direction("accuracy", -0.1) == "worse"
    assert delta_direction("val_loss", -0.1) == "better"
    assert delta_direction("latency_ms", 3) == "worse"
    assert delta_direction("f1", 0) == "same" and delta_direction("f1", None) == "same"


def test_links_for_server_and_static_site() -> None:
    server, static = Links(), Links(static_depth=2)
    assert server.model("m", stage="production") == "/models/m?stage=production"
    assert server.version("m", "v1.0.0+build.1") == "/models/m/v1.0.0%2Bbuild.1"
    assert server.compare("m", ["v1", "v2"]) == "/models/m/compare?v=v1&v=v2"
    assert static.model("m") == "../../models/m/index.html"
    assert static.compare("m", ["v1", "v2"]) == "../../models/m/compare/v1/v2.html"
    assert static.asset("ui.css") == "../../static/ui.css"
    assert Links(0).overview() == "index.html"
    assert page_file("version", "m", ("v2",)) == "models/m/v2.html"
