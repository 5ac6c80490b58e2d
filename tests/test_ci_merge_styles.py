"""Promote on merge from real CI checkouts, after each merge style.

A bare "origin" served by ``git daemon`` on 127.0.0.1 (smart protocol v2, filters allowed,
as GitHub and GitLab serve), a developer clone that registers and stages a model on a
feature branch and pushes it, a merge made with real git (merge commit, squash, rebase),
then a CI checkout made with ``actions/checkout``'s literal commands (v4: ``git init``,
``git remote add``, ``git -c protocol.version=2 fetch --no-tags --prune
--no-recurse-submodules --depth=1 origin +SHA:refs/remotes/origin/main``, ``git checkout
--progress --force -B main refs/remotes/origin/main``) or GitLab's (``git fetch --depth 20``,
detached checkout), and ``uniflow ci promote-on-merge`` run as a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import cli, clone, git, model_dir, open_registry, serve_git_daemon, shared_setup

RULES = """
[[promote]]
model = "clf"
from = "staging"
to = "production"
when = ["accuracy >= 0.9"]
"""
GITHUB = {"GITHUB_RUN_ID": "77", "GITHUB_REPOSITORY": "acme/models"}
OLD_BLOB_SIZE = 2 << 20


@pytest.fixture
def origin(tmp_path: Path) -> Iterator[tuple[Path, Path, str]]:
    """``(bare, developer clone, git:// URL of bare)``: main holds code whose history has a
    2 MiB file no longer in the tree (CI must never fetch it), and the rules."""
    bare, dev = shared_setup(tmp_path, config_extra=RULES)
    git(bare, "config", "uploadpack.allowFilter", "true")
    (dev / "old.bin").write_bytes(os.urandom(OLD_BLOB_SIZE))
    git(dev, "add", "old.bin")
    git(dev, "commit", "-qm", "an old data file")
    git(dev, "rm", "-q", "old.bin")
    git(dev, "commit", "-qm", "drop the old data file")
    for i in range(30):
        (dev / "lib.py").write_text(f"VERSION = {i}\n")
        git(dev, "add", "lib.py")
        git(dev, "commit", "-qm", f"lib {i}")
    git(dev, "push", "-q", "origin", "main")
    for url in serve_git_daemon(bare.parent, receive_pack=True):
        yield bare, dev, f"{url}/{bare.name}"


# ---------------------------------------------------------------------- what people and CI do
def _feature(dev: Path, tmp_path: Path, branch: str, version: str, accuracy: float, commits: int = 1) -> str:
    """Commit code on ``branch``, register ``clf version`` at its tip, stage it, push the
    registry (bytes, tag, lifecycle) and the branch; returns the code commit."""
    git(dev, "checkout", "-q", "-b", branch, "main")
    for i in range(commits):
        (dev / f"{branch}.py").write_text(f"STEP = {i}\n")
        git(dev, "add", f"{branch}.py")
        git(dev, "commit", "-qm", f"{branch}: step {i}")
    reg = open_registry(dev)
    reg.register(
        str(model_dir(tmp_path / f"m-{branch}", 2, seed=len(branch))),
        "clf",
        version=version,
        metrics={"accuracy": accuracy},
    )
    reg.promote("clf", version, "staging")
    reg.close()
    cli(dev, "push")
    git(dev, "push", "-q", "origin", branch)
    return git(dev, "rev-parse", "HEAD").strip()


def _move_main(dev: Path, name: str) -> None:
    """Someone else's change lands on main meanwhile."""
    git(dev, "checkout", "-q", "main")
    git(dev, "pull", "-q", "--ff-only", "origin", "main")
    (dev / f"{name}.txt").write_text(f"{name}\n")
    git(dev, "add", f"{name}.txt")
    git(dev, "commit", "-qm", f"other change {name}")
    git(dev, "push", "-q", "origin", "main")


def _merge(dev: Path, branch: str, style: str) -> tuple[str, str]:
    """Merge ``branch`` into main the way a forge does, push, delete the branch on origin;
    returns ``(main before, main after)``."""
    git(dev, "checkout", "-q", "main")
    git(dev, "pull", "-q", "--ff-only", "origin", "main")
    before = git(dev, "rev-parse", "HEAD").strip()
    if style == "merge":
        git(dev, "merge", "-q", "--no-ff", branch, "-m", f"Merge pull request #1 from {branch}")
    elif style == "squash":
        git(dev, "merge", "-q", "--squash", branch)
        git(dev, "commit", "-qm", f"{branch} (#1)")
    else:  # rebase and fast-forward, as "Rebase and merge" does
        git(dev, "checkout", "-q", "-b", f"{branch}-rebased", branch)
        git(dev, "rebase", "-q", "main")
        git(dev, "checkout", "-q", "main")
        git(dev, "merge", "-q", "--ff-only", f"{branch}-rebased")
    git(dev, "push", "-q", "origin", "main")
    git(dev, "push", "-q", "origin", "--delete", branch)
    return before, git(dev, "rev-parse", "HEAD").strip()


def actions_checkout(url: str, dest: Path, sha: str, ref: str = "refs/heads/main") -> Path:
    """actions/checkout v4's default commands (fetch-depth 1), literally."""
    dest.mkdir()
    git(dest, "init", str(dest))
    git(dest, "remote", "add", "origin", url)
    git(dest, "config", "--local", "gc.auto", "0")
    if ref.startswith("refs/pull/"):
        target = f"refs/remotes/pull/{ref[len('refs/pull/') :]}"
        checkout = ["checkout", "--progress", "--force", target]
    else:
        target = f"refs/remotes/origin/{ref[len('refs/heads/') :]}"
        checkout = ["checkout", "--progress", "--force", "-B", ref[len("refs/heads/") :], target]
    git(
        dest,
        "-c",
        "protocol.version=2",
        "fetch",
        "--no-tags",
        "--prune",
        "--no-recurse-submodules",
        "--depth=1",
        "origin",
        f"+{sha}:{target}",
    )
    git(dest, *checkout)
    return dest


def gitlab_checkout(url: str, dest: Path, sha: str) -> Path:
    """GitLab runner's fetch strategy with GIT_DEPTH 20: the branch, then CI_COMMIT_SHA detached."""
    dest.mkdir()
    git(dest, "init", str(dest))
    git(dest, "remote", "add", "origin", url)
    branch = "+refs/heads/main:refs/remotes/origin/main"
    git(dest, "fetch", "origin", "--prune", "--quiet", "--depth", "20", branch)
    git(dest, "checkout", "-f", "-q", sha)
    return dest


def promote(
    ci: Path, base: str, head: str, *extra: str, code: int = 0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return cli(
        ci,
        "ci",
        "promote-on-merge",
        "--base",
        base,
        "--head",
        head,
        "--push",
        *extra,
        code=code,
        env={**GITHUB, **(env or {})},
    )


# ---------------------------------------------------------------------- reading the outcome
def production_on_origin(bare: Path) -> str | None:
    """The version whose tag origin's production pointer names (None: none)."""
    out = git(bare, "ls-remote", str(bare), "refs/uniflow/stages/clf/production", "refs/tags/models/clf/*")
    refs = {name: sha for sha, name in (line.split("\t") for line in out.splitlines())}
    prod = refs.pop("refs/uniflow/stages/clf/production", None)
    return next((n.rsplit("/", 1)[1] for n, sha in refs.items() if sha == prod), None)


def last_event(bare: Path) -> dict[str, object]:
    event: dict[str, object] = json.loads(git(bare, "show", "refs/uniflow/models/clf:event.json"))
    return event


def local_objects(repo: Path) -> set[str]:
    """Every object id stored in ``repo`` (packs and loose), read without any git command
    that could fetch a missing object from a promisor remote."""
    objects = repo / ".git" / "objects"
    found: set[str] = set()
    for idx in (objects / "pack").glob("*.idx"):
        with open(idx, "rb") as fh:
            out = subprocess.run(["git", "show-index"], stdin=fh, capture_output=True, text=True, check=True)
        found.update(line.split()[1] for line in out.stdout.splitlines())
    for fan in objects.glob("[0-9a-f][0-9a-f]"):
        found.update(fan.name + p.name for p in fan.iterdir())
    return found


def assert_fetched_little(ci: Path, dev: Path) -> None:
    """The CI clone is still shallow and holds no blob of code history: not the 2 MiB file
    that history holds, nor the first code commit."""
    assert git(ci, "rev-parse", "--is-shallow-repository").strip() == "true"
    have = local_objects(ci)
    added = git(dev, "log", "--format=%H", "--grep=an old data file", "main").strip()
    old_blob = git(dev, "rev-parse", f"{added}:old.bin").strip()
    root = git(dev, "rev-list", "--max-parents=0", "main").strip()
    assert old_blob not in have and root not in have
    size = sum(p.stat().st_size for p in (ci / ".git" / "objects").rglob("*") if p.is_file())
    assert size < OLD_BLOB_SIZE // 4, size


# ---------------------------------------------------------------------- the merge styles
@pytest.mark.parametrize(
    "style, moved, how",
    [("merge", False, "commit"), ("squash", False, "tree"), ("rebase", True, "patch")],
)
def test_actions_checkout_default_each_merge_style(
    tmp_path: Path, origin: tuple[Path, Path, str], style: str, moved: bool, how: str
) -> None:
    bare, dev, url = origin
    _feature(dev, tmp_path, "better", "v1.0.0", 0.95, commits=2)
    if moved:
        _move_main(dev, "meanwhile")
    before, after = _merge(dev, "better", style)
    ci = actions_checkout(url, tmp_path / "ci", after)
    assert not git(ci, "for-each-ref", "refs/uniflow", "refs/tags").strip()
    r = promote(ci, before, after)
    assert "promoted clf v1.0.0 to production" in r.stdout, r.stdout
    assert production_on_origin(bare) == "v1.0.0"
    extra = last_event(bare)["extra"]
    assert isinstance(extra, dict) and extra["matched_by"] == how and extra["merge_commit"] == after
    assert_fetched_little(ci, dev)
    # the same job run again: nothing to do, exit 0
    r = promote(ci, before, after)
    assert "already in production" in r.stdout


def test_gitlab_depth_20_rebase_merge(tmp_path: Path, origin: tuple[Path, Path, str]) -> None:
    bare, dev, url = origin
    _feature(dev, tmp_path, "tuned", "v2.0.0", 0.97, commits=3)
    _move_main(dev, "elsewhere")
    before, after = _merge(dev, "tuned", "rebase")
    ci = gitlab_checkout(url, tmp_path / "ci", after)
    r = cli(
        ci,
        "ci",
        "promote-on-merge",
        "--base",
        before,
        "--head",
        after,
        "--push",
        env={"GITLAB_CI": "true", "CI_PIPELINE_ID": "5"},
    )
    assert "promoted clf v2.0.0 to production" in r.stdout and "same patch as" in r.stdout
    assert production_on_origin(bare) == "v2.0.0"
    assert_fetched_little(ci, dev)


def test_full_clone_squash_after_main_moved(tmp_path: Path, origin: tuple[Path, Path, str]) -> None:
    """A full clone (fetch-depth: 0), squash merge of a one-commit branch after main moved:
    no commit has its tree, the squash commit makes the same patch."""
    bare, dev, url = origin
    _feature(dev, tmp_path, "one", "v1.1.0", 0.93)
    _move_main(dev, "race")
    before, after = _merge(dev, "one", "squash")
    ci = clone(url, tmp_path / "ci")
    promote(ci, before, after)
    assert production_on_origin(bare) == "v1.1.0"
    assert git(ci, "rev-parse", "--is-shallow-repository").strip() == "false"


# ---------------------------------------------------------------------- pull-request jobs
@pytest.mark.parametrize(
    "moved, event, how",
    [(False, False, "tree"), (True, True, "pr-head"), (True, False, "patch")],
)
def test_pr_job_registers_on_synthetic_merge_then_squash(
    tmp_path: Path, origin: tuple[Path, Path, str], moved: bool, event: bool, how: str
) -> None:
    """A PR job registers on GitHub's synthetic merge commit (refs/pull/1/merge, detached,
    depth 1) and pushes; the PR is squash-merged (main moved meanwhile or not); CI on main
    matches the version by tree, by the PR head the event names, or by patch."""
    bare, dev, url = origin
    git(dev, "checkout", "-q", "-b", "feat", "main")
    (dev / "feat.py").write_text("FEATURE = True\n")
    git(dev, "add", "feat.py")
    git(dev, "commit", "-qm", "feature")
    git(dev, "push", "-q", "origin", "feat")
    pr_head, main_then = git(dev, "rev-parse", "feat", "main").split()
    git(dev, "checkout", "-q", "--detach", "main")
    git(dev, "merge", "-q", "--no-ff", "feat", "-m", f"Merge {pr_head} into {main_then}")
    synthetic = git(dev, "rev-parse", "HEAD").strip()
    git(dev, "push", "-q", "origin", "HEAD:refs/pull/1/merge")

    pr = actions_checkout(url, tmp_path / "pr", synthetic, "refs/pull/1/merge")
    assert git(pr, "rev-parse", "--abbrev-ref", "HEAD").strip() == "HEAD"  # detached
    reg = open_registry(pr)
    reg.register(
        str(model_dir(tmp_path / "m", 2, seed=9)), "clf", version="v3.0.0", metrics={"accuracy": 0.99}
    )
    reg.promote("clf", "v3.0.0", "staging")
    reg.close()
    cli(pr, "push")

    if moved:
        _move_main(dev, "concurrent")
    before, after = _merge(dev, "feat", "squash")
    env: dict[str, str] = {}
    if event:
        path = tmp_path / "event.json"
        path.write_text(
            json.dumps(
                {
                    "action": "closed",
                    "pull_request": {
                        "number": 1,
                        "merged": True,
                        "head": {"sha": pr_head},
                        "merge_commit_sha": after,
                    },
                }
            )
        )
        env["GITHUB_EVENT_PATH"] = str(path)
    ci = actions_checkout(url, tmp_path / "ci", after)
    r = promote(ci, before, after, env=env)
    assert "promoted clf v3.0.0 to production" in r.stdout, r.stdout
    assert production_on_origin(bare) == "v3.0.0"
    extra = last_event(bare)["extra"]
    assert isinstance(extra, dict) and extra["matched_by"] == how
    assert extra["matched_commit"] == (pr_head if how == "pr-head" else after)
    assert_fetched_little(ci, dev)


# ---------------------------------------------------------------------- never a silent pass
def test_unmatched_candidate_fails_the_job(tmp_path: Path, origin: tuple[Path, Path, str]) -> None:
    """staging holds a version from a branch this merge did not bring: exit 10 with one line
    naming the rule, the version and why; --allow-no-match exits 0; nothing is promoted."""
    bare, dev, url = origin
    code = _feature(dev, tmp_path, "pending", "v1.0.0", 0.95)
    git(dev, "checkout", "-q", "-b", "docs", "main")
    (dev / "README.md").write_text("docs\n")
    git(dev, "add", "README.md")
    git(dev, "commit", "-qm", "docs")
    git(dev, "push", "-q", "origin", "docs")
    before, after = _merge(dev, "docs", "squash")
    ci = actions_checkout(url, tmp_path / "ci", after)
    # the event names a PR head origin does not have (a fork's, gone): it is left out
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"head": {"sha": "1" * 40}}}))
    r = promote(ci, before, after, code=10, env={"GITHUB_EVENT_PATH": str(event)})
    (line,) = r.stderr.splitlines()
    assert line.startswith("error: rule #1 (clf: staging -> production when accuracy >= 0.9): ")
    assert f"clf v1.0.0 holds staging but matches no commit of {before[:12]}..{after[:12]}" in line
    assert f"code commit {code[:12]}: not in the range; no commit there has its tree" in line
    assert "none makes the same patch; not pull request head 111111111111" in line
    assert "--allow-no-match" in line
    r = promote(ci, before, after, "--allow-no-match", "--json")
    assert [x["status"] for x in json.loads(r.stdout)["results"]] == ["unmatched"]
    assert production_on_origin(bare) is None


def test_no_fetch_in_a_shallow_checkout_says_what_is_missing(
    tmp_path: Path, origin: tuple[Path, Path, str]
) -> None:
    _bare, dev, url = origin
    _feature(dev, tmp_path, "f", "v1.0.0", 0.95)
    before, after = _merge(dev, "f", "merge")
    ci = actions_checkout(url, tmp_path / "ci", after)
    r = promote(ci, before, after, "--no-fetch", code=2)
    assert r.stderr.startswith("error: base revision") and "is not a commit in this repository" in r.stderr
    r = promote(ci, "0" * 40, after, "--no-fetch", code=9)  # all zeros: head's first parent
    assert "fetching is off (--no-fetch)" in r.stderr and len(r.stderr.splitlines()) == 1
