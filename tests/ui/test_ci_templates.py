"""The CI templates (hooks/ci/): what they run, least privilege, and real linters on them.

check-jsonschema validates them against the GitHub-workflow and GitLab-CI schemas it
vendors (no network); zizmor audits the GitHub workflow offline at its strictest persona.
Each linter is first shown to reject a broken copy, so a linter that checks nothing fails.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.ui._browser import ROOT

GITHUB = ROOT / "hooks" / "ci" / "github-actions.yml"
GITLAB = ROOT / "hooks" / "ci" / "gitlab-ci.yml"
# A full commit SHA and the release it is, e.g. `actions/checkout@<40 hex>  # v7.0.1`.
PINNED = re.compile(r"^\s*-?\s*uses:\s*[\w.-]+/[\w./-]+@[0-9a-f]{40}\s+#\s*v\d+\.\d+\.\d+\s*$")


def _load(path: Path) -> Any:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load(path.read_text())


def _tool(name: str) -> str:
    """A linter of the dev environment (requirements-dev.lock pins it): beside this Python."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (it is pinned in requirements-dev.lock)")
    return found


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_templates_have_an_optional_publish_job() -> None:
    gh = _load(GITHUB)
    job = gh["jobs"]["publish-ui"]
    assert "UNIFLOW_PUBLISH_UI" in job["if"]
    runs = " ".join(str(step.get("run", "")) for step in job["steps"])
    assert "uniflow ui --export site" in runs and "refs/uniflow/*" in runs
    gl = _load(GITLAB)
    assert "UNIFLOW_PUBLISH_UI" in gl["pages"]["rules"][0]["if"]
    assert "uniflow ui --export public" in gl["pages"]["script"]


def test_templates_promote_on_merge_and_push() -> None:
    steps = _load(GITHUB)["jobs"]["promote"]["steps"]
    run = next(s["run"] for s in steps if "promote-on-merge" in str(s.get("run", "")))
    assert '--base "$BASE" --head "$GITHUB_SHA" --push' in run
    script = " ".join(_load(GITLAB)["uniflow-promote"]["script"])
    assert '--base "$CI_COMMIT_BEFORE_SHA" --head "$CI_COMMIT_SHA" --push' in script


# --- least privilege -------------------------------------------------------------------


def test_github_template_grants_each_job_only_what_it_needs() -> None:
    gh = _load(GITHUB)
    assert gh["permissions"] == {}  # the workflow grants nothing by itself
    perms = {name: job["permissions"] for name, job in gh["jobs"].items()}
    assert perms == {
        "promote": {"contents": "write"},  # the only job that pushes
        "publish-ui": {"contents": "read", "pages": "write", "id-token": "write"},
    }
    for name, job in gh["jobs"].items():
        for step in job["steps"]:
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                # No token left in .git/config; the default fetch (promote fetches the rest).
                assert step["with"] == {"persist-credentials": False}, name
    text = GITHUB.read_text()
    assert "fetch-depth" not in text and "secrets." not in text
    # The write token reaches one step: the one that runs the promotion.
    token_steps = [s for s in gh["jobs"]["promote"]["steps"] if "github.token" in str(s.get("env", {}))]
    assert [s["name"] for s in token_steps] == ["Promote on merge"]


def test_github_template_pins_every_action_to_a_commit() -> None:
    uses = [line for line in GITHUB.read_text().splitlines() if re.match(r"^\s*-?\s*uses:", line)]
    assert len(uses) == 6
    assert [u for u in uses if not PINNED.match(u)] == []


def test_gitlab_template_keeps_the_push_token_to_the_promote_job() -> None:
    gl = _load(GITLAB)
    promote, pages = gl["uniflow-promote"], gl["pages"]
    assert promote["environment"] == {"name": "uniflow-promote", "action": "access"}
    assert "UNIFLOW_PUSH_TOKEN" in " ".join(promote["script"])
    assert "UNIFLOW_PUSH_TOKEN" not in json.dumps(pages)
    text = GITLAB.read_text()
    assert "GIT_DEPTH" not in text  # GitLab's default fetch; promote fetches what it needs
    assert "@${CI_SERVER_HOST}" not in text and "oauth2:${" not in text  # no token in a URL


# --- real linters ----------------------------------------------------------------------


def _schema_check(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    return _run(_tool("check-jsonschema"), "--builtin-schema", schema, str(path))


@pytest.mark.parametrize(
    ("schema", "template", "break_it"),
    [
        ("vendor.github-workflows", GITHUB, ("    runs-on: ubuntu-latest\n", "    runs_on: ubuntu-latest\n")),
        ("vendor.gitlab-ci", GITLAB, ("action: access ", "action: publish ")),
    ],
)
def test_templates_pass_their_schema(
    tmp_path: Path, schema: str, template: Path, break_it: tuple[str, str]
) -> None:
    broken = tmp_path / template.name
    text = template.read_text()
    assert break_it[0] in text
    broken.write_text(text.replace(break_it[0], break_it[1]))
    assert _schema_check(schema, broken).returncode != 0  # the schema does reject a bad file
    r = _schema_check(schema, template)
    assert r.returncode == 0, r.stdout + r.stderr


def _zizmor(path: Path, *extra: str) -> list[dict[str, Any]]:
    """zizmor's findings on ``path``: offline, no configuration file, pedantic persona."""
    r = _run(_tool("zizmor"), "--offline", "--no-config", "--persona", "pedantic", "--format", "json",
             *extra, str(path))  # fmt: skip
    assert r.returncode in (0, 10, 11, 12, 13, 14), r.stderr  # 10+: findings (by severity)
    findings: list[dict[str, Any]] = json.loads(r.stdout)
    return findings


def test_zizmor_finds_nothing_in_the_github_template(tmp_path: Path) -> None:
    unpinned = tmp_path / GITHUB.name
    unpinned.write_text(re.sub(r"@[0-9a-f]{40}", "@v4", GITHUB.read_text()))
    assert {f["ident"] for f in _zizmor(unpinned)} >= {"unpinned-uses"}
    assert [f["ident"] for f in _zizmor(GITHUB)] == []
    # Nothing is hidden by an ignore comment without its reason.
    ignored = [f["ident"] for f in _zizmor(GITHUB, "--no-ignores")]
    comments = re.findall(r"#\s*zizmor:\s*ignore\[([\w,-]+)\](.*)", GITHUB.read_text())
    assert sorted(ignored) == sorted(i for ids, _ in comments for i in ids.split(","))
    assert all(len(reason.strip(" -:")) > 10 for _, reason in comments), comments
