"""``uniflow ui`` as a subprocess on a free loopback port: routes, JSON shapes, read-only, errors."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.ui._browser import http, run_cli, ui_server
from tests.ui._demo import PLANTED_ONERROR, PLANTED_SCRIPT

PAGES = [
    "",
    "models/sentiment_classifier",
    "models/sentiment_classifier?sort=accuracy&order=desc",
    "models/sentiment_classifier?stage=production",
    "models/sentiment_classifier/v1.2.0",
    "models/sentiment_classifier/compare?v=v1.0.0&v=v1.2.0&v=v1.5.0",
    "models/sentiment_classifier/history",
    "models/churn_model",
    "models/xss_probe",
    "models/xss_probe/v1.0.0",
    "models/xss_probe/history",
    "models/xss_probe/compare?v=v1.0.0&v=v1.0.1",
]


@pytest.fixture(scope="module")
def server(demo_repo: Path):
    with ui_server(demo_repo) as (url, proc):
        yield url


def test_prints_a_loopback_url(server: str) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", server)


@pytest.mark.parametrize("path", PAGES)
def test_pages_answer_with_html_and_security_headers(server: str, path: str) -> None:
    status, headers, body = http(server + path)
    assert status == 200, body[:500]
    assert headers["content-type"].startswith("text/html")
    assert "script-src" not in headers["content-security-policy"]  # default-src 'none': no script at all
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert re.fullmatch(r"app;dur=[0-9.]+", headers["server-timing"])
    assert "<script" not in body.lower() and 'onerror="' not in body


def test_planted_markup_is_escaped(server: str) -> None:
    for path in ("models/xss_probe/v1.0.0", "models/xss_probe", "models/xss_probe/compare?v=v1.0.0&v=v1.0.1"):
        body = http(server + path)[2]
        assert PLANTED_SCRIPT not in body and PLANTED_ONERROR not in body
        assert "&lt;script&gt;" in body or "&lt;img" in body


@pytest.mark.parametrize(
    ("path", "cli"),
    [
        ("api/models", ["models", "list", "--json"]),
        ("api/models/sentiment_classifier", ["models", "list", "sentiment_classifier", "--json"]),
        (
            "api/models/sentiment_classifier?stage=archived",
            ["models", "list", "sentiment_classifier", "--stage", "archived", "--json"],
        ),
        (
            "api/models/sentiment_classifier/v1.0.0",
            ["models", "show", "sentiment_classifier", "v1.0.0", "--json"],
        ),
        ("api/models/sentiment_classifier/history", ["models", "history", "sentiment_classifier", "--json"]),
        (
            "api/models/sentiment_classifier/compare?v=v1.0.0&v=v1.3.0",
            ["models", "compare", "sentiment_classifier", "v1.0.0", "v1.3.0", "--json"],
        ),
        ("api/models/xss_probe/v1.0.0", ["models", "show", "xss_probe", "v1.0.0", "--json"]),
    ],
)
def test_api_returns_the_cli_json(server: str, demo_repo: Path, path: str, cli: list[str]) -> None:
    status, headers, body = http(server + path)
    assert status == 200 and headers["content-type"].startswith("application/json")
    proc = run_cli(demo_repo, *cli)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(body) == json.loads(proc.stdout)


def test_healthz(server: str) -> None:
    status, _, body = http(server + "healthz")
    assert status == 200 and json.loads(body)["ok"] is True


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
@pytest.mark.parametrize("path", ["", "models/sentiment_classifier", "api/models", "no/such/page"])
def test_anything_but_get_and_head_is_refused(server: str, method: str, path: str) -> None:
    status, headers, body = http(server + path, method=method)
    assert status == 405 and headers["allow"] == "GET, HEAD" and "read-only" in body


def test_head_is_allowed(server: str) -> None:
    assert http(server + "models/sentiment_classifier", method="HEAD")[0] == 200


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("models/nope", 404, "model &#39;nope&#39; not found"),
        ("models/sentiment_classifier/v9.9.9", 404, "v9.9.9"),
        ("models/Bad%20Name", 400, "invalid"),
        ("models/sentiment_classifier/compare?v=v1.0.0", 400, "at least two versions"),
        ("models/sentiment_classifier?stage=prod", 400, "unknown stage"),
        ("no/such/page", 404, "no page at"),
    ],
)
def test_bad_input_is_a_one_line_error_page(server: str, path: str, status: int, message: str) -> None:
    got, headers, body = http(server + path)
    assert got == status and headers["content-type"].startswith("text/html")
    assert message.lower() in body.lower() and "Traceback" not in body


def test_api_errors_are_json(server: str) -> None:
    status, _, body = http(server + "api/models/nope")
    assert status == 404 and json.loads(body) == {
        "error": "model 'nope' not found in this registry",
        "status": 404,
    }


def test_foreign_host_header_is_refused(server: str) -> None:
    assert http(server, headers={"Host": "evil.example"})[0] == 403
    assert http(server, headers={"Host": "localhost:1234"})[0] == 200


def test_pages_follow_new_versions(tmp_path: Path) -> None:
    """The cache is keyed by the refs: a version registered while serving shows up."""
    from tests.helpers import make_repo
    from uniflow import ModelRegistry

    repo = make_repo(tmp_path / "live")
    reg = ModelRegistry(repo)
    (repo / "m.bin").write_bytes(b"one")
    reg.register(model=str(repo / "m.bin"), name="live", version="v1.0.0", metrics={"acc": 0.5})
    with ui_server(repo) as (url, _proc):
        assert "v1.0.0" in http(url)[2]
        (repo / "m.bin").write_bytes(b"two")
        reg.register(model=str(repo / "m.bin"), name="live", version="v1.1.0", metrics={"acc": 0.6})
        reg.promote("live", "v1.1.0", "production")
        body = http(url)[2]
        assert "production v1.1.0" in body
        page = http(url + "models/live")[2]
        assert page.count('class="point ') == 2


def test_non_loopback_host_warns(demo_repo: Path) -> None:
    proc = run_cli(demo_repo, "ui", "--host", "192.0.2.1", "--port", "0")  # TEST-NET-1: cannot bind here
    assert "warning: listening on 192.0.2.1" in proc.stderr
    assert proc.returncode == 2 and "error: cannot listen on 192.0.2.1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_outside_a_repository(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "ui", "--port", "0")
    assert proc.returncode == 8 and proc.stderr.startswith("error: not a git repository")


def test_bad_port(demo_repo: Path) -> None:
    proc = run_cli(demo_repo, "ui", "--port", "70000")
    assert proc.returncode == 2 and "invalid port" in proc.stderr


def test_quote_of_versions_in_links(server: str) -> None:
    body = http(server + "models/sentiment_classifier")[2]
    assert f'href="/models/sentiment_classifier/{quote("v1.2.0")}"' in body
