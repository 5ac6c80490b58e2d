"""The CI templates (hooks/ci/): what they run, least privilege, and real linters on them.

check-jsonschema validates them against the GitHub-workflow and GitLab-CI schemas it
vendors (no network); zizmor audits the GitHub workflow offline at its strictest persona.
Each linter is first shown to reject a broken copy, so a linter that checks nothing fails.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gitserver import serve_git_http
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


# --- the templates' credential plumbing, run against a Git server that demands the token ---

TOKEN = "ghs_test-token-123"


@contextlib.contextmanager
def _git_http(root: Path, user: str = "x-access-token") -> Iterator[str]:
    """Serve the repositories below ``root`` on 127.0.0.1, demanding ``TOKEN`` as GitHub (user
    ``x-access-token``) and GitLab (``oauth2``) do for a private repository; yields the URL."""
    with serve_git_http(root, user, TOKEN) as (url, _handler):
        yield url


def _step(job: str, name_or_text: str) -> str:
    """The ``run:`` script of the step of ``job`` named so, or whose script contains the text."""
    for step in _load(GITHUB)["jobs"][job]["steps"]:
        if step.get("name") == name_or_text or name_or_text in str(step.get("run", "")):
            return str(step["run"])
    raise AssertionError(f"no step {name_or_text!r} in job {job}")


def _run_step(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **env}
    return subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)  # fmt: skip


def test_publish_ui_fetches_the_registry_refs_with_a_token_it_never_stores(tmp_path: Path) -> None:
    from tests.helpers import git

    bare = tmp_path / "srv" / "repo.git"
    src = tmp_path / "src"
    git(tmp_path, "init", "-q", "-b", "main", str(src))
    git(src, "commit", "-q", "--allow-empty", "-m", "code")
    git(src, "tag", "-a", "-m", "version", "models/clf/v1.0.0")
    git(src, "update-ref", "refs/uniflow/models/clf", "HEAD")
    git(tmp_path, "clone", "-q", "--bare", "--mirror", str(src), str(bare))
    work = tmp_path / "work"  # what actions/checkout leaves: the commit, no registry refs
    git(tmp_path, "clone", "-q", "--depth", "1", "--no-tags", bare.as_uri(), str(work))
    script = _step("publish-ui", "Fetch the registry's refs (checkouts leave them out)")
    with _git_http(bare.parent) as url:
        git(work, "remote", "set-url", "origin", f"{url}/repo.git")
        env = {"GITHUB_SERVER_URL": url, "TOKEN": "wrong"}
        assert _run_step(script, work, env).returncode != 0  # the server does demand the token
        r = _run_step(script, work, {**env, "TOKEN": TOKEN})
        assert r.returncode == 0, r.stderr
    refs = git(work, "for-each-ref", "--format=%(refname)", "refs/tags", "refs/uniflow").split()
    assert refs == ["refs/tags/models/clf/v1.0.0", "refs/uniflow/models/clf"]
    stored = (work / ".git" / "config").read_text()
    assert TOKEN not in stored and "extraheader" not in stored
    assert f"::add-mask::{base64.b64encode(f'x-access-token:{TOKEN}'.encode()).decode()}" in r.stdout


def test_promote_pushes_with_the_token_from_its_environment(tmp_path: Path) -> None:
    from tests.helpers import clone, git, shared_setup
    from tests.test_ci import GITHUB as CI_ENV
    from tests.test_ci import RULES, _feature, _merge

    bare, a = shared_setup(tmp_path, config_extra=RULES)
    _feature(a, tmp_path, "feature-good", "v1.0.0", {"accuracy": 0.95, "f1": 0.9}, seed=1)
    base, head = _merge(a, "feature-good")
    # A full clone: this test is about the token; the shallow checkout is promote-on-merge's
    # own business (it fetches the history it needs; tests/test_ci.py).
    ci = clone(bare, tmp_path / "ci")
    script = _step("promote", "Promote on merge")
    with _git_http(bare.parent) as url:
        git(ci, "remote", "set-url", "origin", f"{url}/{bare.name}")
        env = {**CI_ENV, "GITHUB_SERVER_URL": url, "BASE": base, "GITHUB_SHA": head, "TOKEN": "wrong"}
        refused = _run_step(script, ci, env)
        assert refused.returncode != 0 and "production" not in git(
            bare, "for-each-ref", "refs/uniflow/stages"
        )
        r = _run_step(script, ci, {**env, "TOKEN": TOKEN})
        assert r.returncode == 0, r.stdout + r.stderr
    assert "promoted clf v1.0.0 to production" in r.stdout
    assert TOKEN not in (ci / ".git" / "config").read_text()
    assert "refs/uniflow/stages/clf/production" in git(bare, "for-each-ref", "refs/uniflow/stages")


def test_gitlab_promote_pushes_with_the_token_from_its_environment(tmp_path: Path) -> None:
    from tests.helpers import clone, git, shared_setup
    from tests.test_ci import RULES, _feature, _merge

    bare, a = shared_setup(tmp_path, config_extra=RULES)
    _feature(a, tmp_path, "feature-good", "v1.0.0", {"accuracy": 0.95, "f1": 0.9}, seed=1)
    base, head = _merge(a, "feature-good")
    ci = clone(bare, tmp_path / "ci")  # full: see the GitHub test above
    # The job's script after `pip install`: the runner sets CI_* and the masked variable.
    script = "\n".join(_load(GITLAB)["uniflow-promote"]["script"][1:])
    with _git_http(bare.parent, user="oauth2") as url:
        git(ci, "remote", "set-url", "origin", f"http://gitlab-ci-token:jobtoken@{url[7:]}/{bare.name}")
        env = {"CI_SERVER_URL": url, "CI_PROJECT_PATH": bare.name.removesuffix(".git")}
        env |= {"CI_COMMIT_BEFORE_SHA": base, "CI_COMMIT_SHA": head, "UNIFLOW_PUSH_TOKEN": "wrong"}
        refused = _run_step(script, ci, env)
        assert refused.returncode != 0
        assert "production" not in git(bare, "for-each-ref", "refs/uniflow/stages")
        r = _run_step(script, ci, {**env, "UNIFLOW_PUSH_TOKEN": TOKEN})
        assert r.returncode == 0, r.stdout + r.stderr
    assert "promoted clf v1.0.0 to production" in r.stdout
    stored = (ci / ".git" / "config").read_text()
    assert TOKEN not in stored and "jobtoken" not in stored
    assert "refs/uniflow/stages/clf/production" in git(bare, "for-each-ref", "refs/uniflow/stages")


def test_publish_ui_exports_the_registry_from_the_default_shallow_checkout(tmp_path: Path) -> None:
    from tests.helpers import cli, git, model_dir, open_registry, shared_setup

    bare, a = shared_setup(tmp_path)
    reg = open_registry(a)
    reg.register(str(model_dir(tmp_path / "m1", 2, seed=1)), "clf", version="v1.0.0", metrics={"acc": 0.9})
    (a / "train.py").write_text("print('train v2')\n")
    git(a, "commit", "-qam", "train again")
    git(a, "push", "-q", "origin", "main")
    reg.register(str(model_dir(tmp_path / "m2", 2, seed=2)), "clf", version="v1.1.0", metrics={"acc": 0.95})
    reg.promote("clf", "v1.1.0", "production")
    reg.close()
    cli(a, "push")
    work = tmp_path / "work"  # actions/checkout's default: one commit, no tags
    git(tmp_path, "clone", "-q", "--depth", "1", "--no-tags", bare.as_uri(), str(work))
    with _git_http(bare.parent) as url:
        git(work, "remote", "set-url", "origin", f"{url}/{bare.name}")
        fetch = _step("publish-ui", "Fetch the registry's refs (checkouts leave them out)")
        r = _run_step(fetch, work, {"GITHUB_SERVER_URL": url, "TOKEN": TOKEN})
        assert r.returncode == 0, r.stderr
    r = _run_step(_step("publish-ui", "uniflow ui --export site"), work, {})
    assert r.returncode == 0, r.stdout + r.stderr
    index = (work / "site" / "index.html").read_text()
    assert "clf" in index and "v1.1.0" in index and "production" in index
