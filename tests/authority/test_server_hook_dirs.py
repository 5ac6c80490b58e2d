"""The server hook on servers that run a directory of hooks (docs/governance.md, "The server
hook"): Gitea's ``hooks/pre-receive.d`` (found by ``uniflow hooks install --server``) and
GitLab's ``custom_hooks/pre-receive.d`` (``--into DIR``).

Neither server can be installed here. What each does with hooks is reproduced with real
``git`` as their documentation describes it:

* Gitea writes its own ``hooks/pre-receive``, which runs every executable file in
  ``hooks/pre-receive.d/`` with the same input (its own hook, ``gitea``, is one of them), and
  rewrites both when an admin resynchronizes the hooks;
* GitLab's Gitaly points ``core.hooksPath`` at hooks of its own, outside the repository,
  which run every executable file in the repository's ``custom_hooks/pre-receive.d/`` from
  the repository's directory (``GIT_DIR=.``).

The dispatchers below are written for these tests (they copy no server's code). Pushes are
plain ``git push`` over ``file://``; forgeries are built with plumbing.
"""

from __future__ import annotations

import stat
from pathlib import Path

from tests.helpers import cli

from .conftest import Key, git
from .test_consume_push import (
    LIFECYCLE,
    REGISTRY_REFS,
    forgery_refused,
    governed,
    head_of,
    hook_python,
    keys,
    push,
)
from .test_signed_lifecycle import ALICE, BOB, CI, as_user, staged

__all__ = ["governed", "hook_python", "keys"]  # the fixtures, shared with test_consume_push

#: what Gitea's own pre-receive does: each executable in pre-receive.d, the same input
GITEA_DISPATCH = """#!/usr/bin/env bash
input=$(cat)
status=0
for hook in "${GIT_DIR:-.}/hooks/pre-receive.d/"*; do
    [ -f "$hook" ] && [ -x "$hook" ] || continue
    printf '%s\\n' "$input" | "$hook" || status=$?
done
exit $status
"""
#: what Gitaly's hooks do with a repository's custom hooks: run from the repository's directory
GITLAB_DISPATCH = """#!/usr/bin/env bash
input=$(cat)
status=0
for hook in "$PWD"/custom_hooks/pre-receive.d/*; do
    [ -f "$hook" ] && [ -x "$hook" ] || continue
    printf '%s\\n' "$input" | GIT_DIR=. "$hook" || status=$?
done
exit $status
"""


def _executable(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def _bare(tmp_path: Path, origin: Path) -> Path:
    bare = tmp_path / "srv" / "server.git"
    bare.parent.mkdir(exist_ok=True)
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(origin, "push", "-q", str(bare), "main")
    return bare


def _gitea_hooks(bare: Path, log: Path) -> None:
    """Gitea's hooks as it (re)writes them: the dispatcher and its own hook in pre-receive.d."""
    _executable(bare / "hooks" / "pre-receive", GITEA_DISPATCH)
    _executable(bare / "hooks" / "pre-receive.d" / "gitea", f'#!/bin/sh\ncat >> "{log}"\n')


def _promote_properly(repo: Path, keys: dict[str, Key], version: str) -> None:
    as_user(repo, keys[BOB]).approve("clf", version, for_stage="production")
    as_user(repo, keys[CI]).promote("clf", version, "production")


def test_gitea_layout_the_hook_goes_into_pre_receive_d_and_survives_a_resync(
    tmp_path: Path, governed: Path, keys: dict[str, Key], hook_python: None
) -> None:
    v = staged(governed, keys)
    bare = _bare(tmp_path, governed)
    log = tmp_path / "gitea-saw.txt"
    _gitea_hooks(bare, log)
    out = cli(tmp_path, "hooks", "install", "--server", str(bare)).stdout
    ours = bare / "hooks" / "pre-receive.d" / "uniflow"
    assert f"installed {ours}" in out, out
    assert (bare / "hooks" / "pre-receive").read_text() == GITEA_DISPATCH  # Gitea's, untouched
    assert not (bare / "hooks" / "pre-receive.uniflow-chained").exists()

    pushed = push(governed, str(bare))
    assert pushed.returncode == 0, pushed.stderr.decode()
    assert LIFECYCLE in log.read_text()  # Gitea's own hook still sees every push

    _gitea_hooks(bare, log)  # an admin resynchronizes Gitea's hooks: uniflow's file stays
    forged, err = forgery_refused(governed, bare, v)
    assert f"uniflow: refused {LIFECYCLE}: promote {v} (lifecycle commit {forged[:12]}" in err, err


def test_gitlab_layout_the_hook_goes_into_custom_hooks_and_gitalys_hooks_stay(
    tmp_path: Path, governed: Path, keys: dict[str, Key], hook_python: None
) -> None:
    v = staged(governed, keys)
    bare = _bare(tmp_path, governed)
    gitaly = _executable(tmp_path / "gitaly" / "hooks" / "pre-receive", GITLAB_DISPATCH)
    git(bare, "config", "core.hooksPath", str(gitaly.parent))
    into = bare / "custom_hooks" / "pre-receive.d"
    out = cli(tmp_path, "hooks", "install", "--server", str(bare), "--into", str(into)).stdout
    assert f"installed {into / 'uniflow'}" in out and "trust root: first seen at" in out, out
    assert gitaly.read_text() == GITLAB_DISPATCH  # core.hooksPath's hook is the server's own
    assert (bare / "uniflow" / "trust-root").is_file()  # the trust root stays in the repository

    forged, err = forgery_refused(governed, bare, v)  # the whole first push: nothing of it lands
    assert f"promote {v} (lifecycle commit {forged[:12]}" in err, err
    assert head_of(bare) is None

    git(governed, "update-ref", LIFECYCLE, f"{forged}^")  # the forgery taken back
    _promote_properly(governed, keys, v)
    pushed = push(governed, str(bare), *REGISTRY_REFS)
    assert pushed.returncode == 0, pushed.stderr.decode()
    assert head_of(bare) == head_of(governed)


def test_into_without_server_is_refused_in_one_line(tmp_path: Path, governed: Path) -> None:
    r = cli(governed, "hooks", "install", "--into", str(tmp_path / "d"), code=None)
    assert r.returncode != 0
    assert r.stderr.strip() == "error: --into goes with --server PATH.git", r.stderr
    assert not (tmp_path / "d").exists()


def test_install_writes_no_file_through_a_symlink_planted_in_the_repository(
    tmp_path: Path, governed: Path, keys: dict[str, Key]
) -> None:
    """The pinned trust root and the hook are new files renamed into place: a symlink where
    either goes is replaced, never written through (nor is its target made executable)."""
    bare = _bare(tmp_path, governed)
    outside = tmp_path / "outside.txt"
    outside.write_text("not uniflow's\n")
    outside.chmod(0o600)
    pinned = bare / "uniflow" / "server-trust-root.allowed_signers"
    pinned.parent.mkdir(exist_ok=True)
    pinned.symlink_to(outside)
    hooks = bare / "hooks"
    for name in ("pre-receive", ".pre-receive.uniflow-tmp"):  # the hook, and where it was staged
        (hooks / name).unlink(missing_ok=True)
        (hooks / name).symlink_to(outside)
    root = tmp_path / "admins"
    root.write_text(f"{ALICE} {keys[ALICE].pub_line}\n")
    cli(tmp_path, "hooks", "install", "--server", str(bare), "--trust-root", str(root))
    assert outside.read_text() == "not uniflow's\n"
    assert stat.S_IMODE(outside.stat().st_mode) == 0o600
    assert not pinned.is_symlink() and pinned.read_text() == root.read_text()
