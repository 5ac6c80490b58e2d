"""Promote on merge: rules parsed (never evaluated), a merged feature branch promoted from a fresh
clone, a failing version refused with a non-zero exit, CI run details recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import cli, clone, git, model_dir, open_registry, shared_setup
from uniflow import PolicyError, PromoteReport
from uniflow._errors import RepositoryError, UsageError
from uniflow._records.config import parse_condition
from uniflow.sharing.candidates import pr_heads
from uniflow.sharing.ci import ci_context

RULES = """
[[promote]]
model = "clf"
from = "staging"
to = "production"
when = ["accuracy >= 0.9", "f1 >= 0.85"]
"""

GITHUB = {
    "GITHUB_RUN_ID": "4242",
    "GITHUB_SERVER_URL": "https://github.example",
    "GITHUB_REPOSITORY": "acme/models",
}


def _feature(
    a: Path, tmp_path: Path, branch: str, version: str, metrics: dict[str, float], seed: int
) -> None:
    """On a feature branch: commit code, register and stage a version, push bytes, refs and branch."""
    cli(a, "pull")  # see what CI promoted meanwhile
    git(a, "checkout", "-q", "-b", branch, "main")
    (a / "train.py").write_text(f"print('train {branch}')\n")
    git(a, "commit", "-qam", f"train on {branch}")
    ra = open_registry(a)
    ra.register(str(model_dir(tmp_path / branch, 2, seed=seed)), "clf", version=version, metrics=metrics)
    ra.promote("clf", version, "staging")
    cli(a, "push")
    git(a, "push", "-q", "origin", branch)


def _merge(a: Path, branch: str) -> tuple[str, str]:
    git(a, "checkout", "-q", "main")
    old = git(a, "rev-parse", "HEAD").strip()
    git(a, "merge", "-q", "--no-ff", branch, "-m", f"Merge {branch}")
    git(a, "push", "-q", "origin", "main")
    return old, git(a, "rev-parse", "HEAD").strip()


def test_promote_on_merge_end_to_end(tmp_path: Path) -> None:
    bare, a = shared_setup(tmp_path, config_extra=RULES)
    b = clone(bare, tmp_path / "b")

    # a good version merged: a fresh clone (as CI has) promotes it and pushes
    _feature(a, tmp_path, "feature-good", "v1.0.0", {"accuracy": 0.95, "f1": 0.9}, seed=1)
    old, merge = _merge(a, "feature-good")
    ci_clone = clone(bare, tmp_path / "ci1")
    # CI checkouts may hold lightweight copies of tags: promote-on-merge fetches them with force
    commit = git(ci_clone, "rev-parse", "refs/tags/models/clf/v1.0.0^{commit}").strip()
    git(ci_clone, "tag", "-f", "models/clf/v1.0.0", commit)
    r = cli(ci_clone, "ci", "promote-on-merge", "--base", old, "--head", merge, "--push", env=GITHUB)
    assert "promoted clf v1.0.0 to production" in r.stdout and "accuracy >= 0.9 held" in r.stdout
    cli(b, "pull")
    rb = open_registry(b)
    assert rb.get("clf", stage="production").version == "v1.0.0"
    last = rb.history("clf")[-1]
    assert last.action == "promote" and last.to_stage == "production"
    assert last.extra["merge_commit"] == merge and last.extra["base_commit"] == old
    assert last.extra["ci"]["run_url"] == "https://github.example/acme/models/actions/runs/4242"
    # re-running the same job is harmless
    r = cli(ci_clone, "ci", "promote-on-merge", "--base", old, "--head", merge, "--push")
    assert "already in production" in r.stdout

    # a version failing a rule is not promoted and the job fails
    _feature(a, tmp_path, "feature-bad", "v1.1.0", {"accuracy": 0.8, "f1": 0.9}, seed=2)
    old2, merge2 = _merge(a, "feature-bad")
    ci2 = clone(bare, tmp_path / "ci2")
    r = cli(ci2, "ci", "promote-on-merge", "--base", old2, "--head", merge2, "--push", code=10)
    assert "clf v1.1.0 NOT promoted to production" in r.stdout
    assert r.stderr.startswith("error:") and "accuracy >= 0.9 failed (accuracy = 0.8)" in r.stderr
    cli(b, "pull")
    rb = open_registry(b)
    assert rb.get("clf", stage="production").version == "v1.0.0"
    assert rb.get("clf", "v1.1.0").stage == "staging"

    # a merge that registered nothing while v1.1.0 holds staging: the rule's candidate matched
    # nothing, which is said (version, rule, why) and fails the job unless --allow-no-match
    git(a, "checkout", "-q", "-b", "docs", "main")
    (a / "README.md").write_text("docs\n")
    git(a, "add", "README.md")
    git(a, "commit", "-qm", "docs")
    old3, merge3 = _merge(a, "docs")
    r = cli(a, "ci", "promote-on-merge", "--base", old3, "--head", merge3, code=10)
    assert "clf v1.1.0 NOT matched by rule #1" in r.stdout
    (line,) = r.stderr.splitlines()
    assert line.startswith("error: rule #1 (clf: staging -> production")
    assert "clf v1.1.0 holds staging" in line
    assert "not in the range; no commit there has its tree; none makes the same patch" in line
    r = cli(a, "ci", "promote-on-merge", "--base", old3, "--head", merge3, "--allow-no-match", "--json")
    report = json.loads(r.stdout)
    assert [x["status"] for x in report["results"]] == ["unmatched"] and report["promoted"] == 0
    # staging empty: nothing to match, exit 0 with a line saying so
    open_registry(a).archive("clf", "v1.1.0")
    r = cli(a, "ci", "promote-on-merge", "--base", old3, "--head", merge3, "--no-fetch", "--json")
    report = json.loads(r.stdout)
    assert [x["status"] for x in report["results"]] == ["no-candidate"] and report["promoted"] == 0
    r = cli(a, "ci", "promote-on-merge", "--base", old3, "--head", merge3, "--no-fetch")
    assert "no promotion rule matched" in r.stdout


def test_promote_on_merge_python_api_and_missing_metric(tmp_path: Path) -> None:
    _bare, a = shared_setup(tmp_path, config_extra=RULES)
    _feature(a, tmp_path, "f", "v2.0.0", {"accuracy": 0.99}, seed=3)
    old, merge = _merge(a, "f")
    from uniflow.sharing.ci import promote_on_merge

    ra = open_registry(a)
    with pytest.raises(PolicyError, match="metric 'f1' is missing") as info:
        promote_on_merge(ra.repository, old, merge)
    report = info.value.report
    assert isinstance(report, PromoteReport) and not report.ok and report.promoted == 0
    failed = report.results[0]
    assert report.failures == (failed,)
    assert (failed.model, failed.version, failed.to, failed.status) == (
        "clf",
        "v2.0.0",
        "production",
        "failed",
    )
    r = cli(a, "ci", "promote-on-merge", "--base", old, "--head", merge, "--no-fetch", "--json", code=10)
    printed = json.loads(r.stdout)  # the report's to_dict() plus the error line
    assert printed == {**report.to_dict(), "ci": printed["ci"], "error": str(info.value)}
    assert ra.get("clf", "v2.0.0").stage == "staging"
    dry = cli(a, "ci", "promote-on-merge", "--base", old, "--head", merge, "--dry-run", "--no-fetch", code=10)
    assert "NOT promoted" in dry.stdout


@pytest.mark.parametrize(
    "text, metric, op, value",
    [
        ("accuracy >= 0.9", "accuracy", ">=", 0.9),
        ("f1>0.85", "f1", ">", 0.85),
        ("loss < 1e-3", "loss", "<", 0.001),
        ("val/acc == 1", "val/acc", "==", 1.0),
        (" n_errors != -2 ", "n_errors", "!=", -2.0),
    ],
)
def test_parse_condition(text: str, metric: str, op: str, value: float) -> None:
    c = parse_condition(text)
    assert (c.metric, c.op, c.value) == (metric, op, value)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('x') > 1",
        "accuracy >= nan",
        "accuracy => 0.9",
        "accuracy >= 0.9 or 1",
        "accuracy",
        "",
        ">= 0.9",
        "accuracy >= inf",
        "accuracy >= 0x10",
    ],
)
def test_parse_condition_rejects(text: str) -> None:
    with pytest.raises(RepositoryError):
        parse_condition(text)


def test_condition_checks() -> None:
    c = parse_condition("accuracy >= 0.9")
    assert c.check({"accuracy": 0.9})[0] is True
    assert c.check({"accuracy": 0.89}) == (False, "accuracy >= 0.9 failed (accuracy = 0.89)")
    assert c.check({})[0] is False
    assert c.check({"accuracy": "high"})[0] is False
    assert c.check({"accuracy": True})[0] is False


def test_ci_context() -> None:
    gh = ci_context(GITHUB)
    assert gh["provider"] == "github" and gh["run_url"].endswith("/acme/models/actions/runs/4242")
    gl = ci_context(
        {
            "GITLAB_CI": "true",
            "CI_PIPELINE_URL": "https://gitlab.example/p/-/pipelines/7",
            "CI_PIPELINE_ID": "7",
        }
    )
    assert gl == {"provider": "gitlab", "run_url": "https://gitlab.example/p/-/pipelines/7", "run_id": "7"}
    assert ci_context({}) == {}


def test_pr_heads_from_the_ci(tmp_path: Path) -> None:
    """The PR/MR head promote-on-merge matches by: GitHub's event file, GitLab's variable."""
    event = tmp_path / "event.json"
    head = "a" * 40
    event.write_text(json.dumps({"action": "closed", "pull_request": {"head": {"sha": head}}}))
    gl = "b" * 40
    env = {"GITHUB_EVENT_PATH": str(event), "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA": gl}
    assert pr_heads(env) == [head, gl]
    event.write_text(json.dumps({"head_commit": {"id": head}}))  # a push event: no PR
    assert pr_heads({"GITHUB_EVENT_PATH": str(event), "CI_MERGE_REQUEST_SOURCE_BRANCH_SHA": "main"}) == []
    event.write_text("{not json")
    with pytest.raises(UsageError, match="GITHUB_EVENT_PATH"):
        pr_heads({"GITHUB_EVENT_PATH": str(event)})


def test_bad_rules_are_reported(tmp_path: Path) -> None:
    _bare, a = shared_setup(tmp_path, config_extra='[[promote]]\nmodel = "clf"\nto = "prod"\n')
    head = git(a, "rev-parse", "HEAD").strip()
    r = cli(a, "ci", "promote-on-merge", "--base", head, "--head", head, "--no-fetch", code=8)
    assert "promotion rule #1" in r.stderr and "unknown stage" in r.stderr


def test_ci_templates_call_the_command() -> None:
    root = Path(__file__).resolve().parent.parent
    for name in ("github-actions.yml", "gitlab-ci.yml"):
        text = (root / "hooks" / "ci" / name).read_text()
        assert "uniflow ci promote-on-merge" in text and "--push" in text
    yaml = pytest.importorskip("yaml")

    gh = yaml.safe_load((root / "hooks" / "ci" / "github-actions.yml").read_text())
    assert "promote" in gh["jobs"]
    gl = yaml.safe_load((root / "hooks" / "ci" / "gitlab-ci.yml").read_text())
    assert "uniflow-promote" in gl
