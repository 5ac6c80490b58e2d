"""Policy enforcement where refs arrive: ``uniflow pull`` rejects, per model, remote lifecycle
commits that break the policy and integrates the rest; the ``pre-receive`` hook that
``uniflow hooks install --server`` puts in a bare repository refuses such pushes, made with
plain ``git push`` over file://, git daemon and smart HTTP. Every forgery is built with plain
git (``git commit-tree``, signed with ``-S`` where the attack needs a signature)."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.gitserver import serve_git_http
from tests.helpers import GIT_ENV, cli
from uniflow import ModelRegistry

from . import test_signed_lifecycle as signed
from .conftest import Key, git
from .test_signed_lifecycle import ALICE, BOB, CI, MALLORY, POLICY, as_user, register, staged, use_key

keys = signed.keys  # the fixtures: five keys, and a repository whose policy alice signed
governed = signed.governed

LIFECYCLE = "refs/uniflow/models/clf"
REGISTRY_REFS = ("refs/tags/models/*:refs/tags/models/*", "refs/uniflow/models/*:refs/uniflow/models/*")
ROOT = Path(__file__).resolve().parents[2]


def forge(repo: Path, version: str, to: str, key: Key | None = None, model: str = "clf") -> str:
    """A lifecycle commit moving ``version`` to ``to``, made with plumbing only and signed by
    ``key`` (``git commit-tree -S``) or unsigned; the ref moved by ``git update-ref``."""
    ref = f"refs/uniflow/models/{model}"
    head = git(repo, "rev-parse", ref).stdout.decode().strip()
    state = json.loads(git(repo, "show", f"{head}:state.json").stdout)
    before = state["stage_of"].get(version, "development")
    state["stage_of"][version] = to
    state["seq"] += 1
    event: dict[str, Any] = {"action": "promote", "version": version, "from": before, "to": to}
    event.update(seq=state["seq"], actor="Someone <someone@example.com>", at="2026-01-01T00:00:00+00:00")

    def blob(obj: dict[str, Any]) -> str:
        data = (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()
        return git(repo, "hash-object", "-w", "--stdin", data=data).stdout.decode().strip()

    tree_text = f"100644 blob {blob(event)}\tevent.json\n100644 blob {blob(state)}\tstate.json\n"
    tree = git(repo, "mktree", data=tree_text.encode()).stdout.decode().strip()
    sign = ["-c", "gpg.format=ssh", "-c", f"user.signingKey={key.path}"] if key else []
    args = [*sign, "commit-tree", tree, "-p", head, "-m", f"promote {model} {version}"]
    commit = git(repo, *args, *(["-S"] if key else [])).stdout.decode().strip()
    git(repo, "update-ref", ref, commit, head)
    return commit


def head_of(repo: Path, ref: str = LIFECYCLE) -> str | None:
    out = git(repo, "rev-parse", "-q", "--verify", ref, check=False)
    return out.stdout.decode().strip() or None


def cloned(origin: Path, dest: Path) -> Path:
    """``git clone`` of ``origin`` whose first ``uniflow pull`` brings the registry (and
    records the policy it saw first: the clone's trust root)."""
    git(origin.parent, "clone", "-q", str(origin), str(dest))
    cli(dest, "pull")
    return dest


# ---------------------------------------------------------------------- pull
def test_pull_rejects_an_unsigned_promotion_and_integrates_the_other_models(
    tmp_path: Path, governed: Path, keys: dict[str, Key]
) -> None:
    v = staged(governed, keys)
    clone = cloned(governed, tmp_path / "clone")
    before = head_of(clone)
    assert before == head_of(governed)

    forged = forge(governed, v, "production")  # raw git: no signature, no approval
    use_key(governed, keys[ALICE])
    model = governed.parent / "other.bin"
    model.write_bytes(b"o" * 4096)
    ModelRegistry(governed).register(str(model), "other")  # valid: signed by alice

    out = cli(clone, "pull", code=None)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    line = f"clf: rejected: promote {v} (lifecycle commit {forged[:12]}, not signed by an allowed signer)"
    assert line in out.stderr, out.stderr
    assert "model 'clf' (breaks the policy" in out.stderr  # the error line names the model
    assert head_of(clone) == before  # clf stays as it was
    assert head_of(clone, "refs/uniflow/models/other") == head_of(governed, "refs/uniflow/models/other")

    report = json.loads(cli(clone, "pull", "--json", code=None).stdout)
    assert report["models"]["clf"] == "rejected"
    assert any(forged[:12] in r and "needs 1 approval" in r for r in report["refused"]["clf"])


def test_pull_rejects_a_promotion_signed_by_an_unknown_key(
    tmp_path: Path, governed: Path, keys: dict[str, Key]
) -> None:
    v = staged(governed, keys)
    clone = cloned(governed, tmp_path / "clone")
    before = head_of(clone)
    forged = forge(governed, v, "production", keys[MALLORY])
    assert git(governed, "verify-commit", forged, check=False).returncode != 0  # git agrees

    out = cli(clone, "pull", code=None)
    assert out.returncode != 0
    assert f"clf: rejected: promote {v} (lifecycle commit {forged[:12]}" in out.stderr
    assert "is not an allowed signer" in out.stderr
    assert head_of(clone) == before


def test_pull_without_a_policy_integrates_as_before(tmp_path: Path, keys: dict[str, Key]) -> None:
    from tests.helpers import make_repo

    origin = make_repo(tmp_path / "plain")
    v = register(origin, None)
    clone = cloned(origin, tmp_path / "clone")
    forge(origin, v, "production")
    out = cli(clone, "pull")
    assert "clf: updated" in out.stdout
    assert head_of(clone) == head_of(origin)


# ---------------------------------------------------------------------- the server hook
@pytest.fixture
def hook_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the installed hook run this checkout's uniflow: the hook starts its interpreter
    isolated (``-I``, which ignores PYTHONPATH), so a wrapper drops ``-I`` and points
    PYTHONPATH at this tree; every git process started from here on inherits it."""
    wrapper = tmp_path / "python-here"
    wrapper.write_text(
        f'#!/bin/sh\n[ "$1" = "-I" ] && shift\nPYTHONPATH="{ROOT}" exec "{sys.executable}" "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("UNIFLOW_PYTHON", str(wrapper))
    for k, val in GIT_ENV.items():
        monkeypatch.setenv(k, val)


def server_for(tmp_path: Path, origin: Path, name: str = "server.git") -> Path:
    """A bare repository holding ``origin``'s main branch (the policy), its hook installed."""
    bare = tmp_path / "srv" / name
    bare.parent.mkdir(exist_ok=True)
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(origin, "push", "-q", str(bare), "main")
    out = cli(tmp_path, "hooks", "install", "--server", str(bare)).stdout
    assert "installed" in out and "trust root: first seen at" in out
    return bare


def push(repo: Path, url: str, *refspecs: str) -> Any:
    return git(repo, "push", url, *(refspecs or REGISTRY_REFS), check=False)


def refused_push(repo: Path, url: str, *refspecs: str) -> str:
    """The stderr of a ``git push`` the server refused (asserted)."""
    r = push(repo, url, *refspecs)
    err = r.stderr.decode()
    assert r.returncode != 0, err
    return err


def forgery_refused(repo: Path, bare: Path, version: str, key: Key | None = None) -> tuple[str, str]:
    """A promotion of ``version`` to production forged in ``repo`` (signed by ``key``, or not)
    and pushed to ``bare``: ``(the forged commit, git push's stderr)``, once asserted that the
    push was refused and the server's lifecycle did not move."""
    accepted = head_of(bare)
    forged = forge(repo, version, "production", key)
    err = refused_push(repo, str(bare))
    assert head_of(bare) == accepted
    return forged, err


@contextlib.contextmanager
def over_file(base: Path) -> Iterator[str]:
    yield (base / "server.git").as_uri()


@contextlib.contextmanager
def over_http(base: Path) -> Iterator[str]:
    with serve_git_http(base, "ci", "tok-1") as (url, _handler):
        yield url.replace("http://", "http://ci:tok-1@") + "/server.git"


@contextlib.contextmanager
def over_daemon(base: Path) -> Iterator[str]:
    from tests.helpers import serve_git_daemon

    for url in serve_git_daemon(base, receive_pack=True):
        yield f"{url}/server.git"


TRANSPORTS = {"file": over_file, "http-backend": over_http, "git-daemon": over_daemon}


@pytest.mark.parametrize("transport", sorted(TRANSPORTS))
def test_pre_receive_refuses_an_unsigned_promotion_pushed_with_raw_git(
    tmp_path: Path, governed: Path, keys: dict[str, Key], hook_python: None, transport: str
) -> None:
    v = staged(governed, keys)
    bare = server_for(tmp_path, governed)
    with TRANSPORTS[transport](bare.parent) as url:
        ok = push(governed, url)
        assert ok.returncode == 0, ok.stderr.decode()
        accepted = head_of(bare)
        assert accepted == head_of(governed)

        forged = forge(governed, v, "production")
        refused = push(governed, url)
        err = refused.stderr.decode()
        assert refused.returncode != 0
        assert f"uniflow: refused {LIFECYCLE}: promote {v} (lifecycle commit {forged[:12]}" in err, err
        assert "pre-receive hook declined" in err
        assert head_of(bare) == accepted  # nothing moved


def test_pre_receive_refuses_a_promotion_signed_by_an_unknown_key(
    tmp_path: Path, governed: Path, keys: dict[str, Key], hook_python: None
) -> None:
    v = staged(governed, keys)
    bare = server_for(tmp_path, governed)
    assert push(governed, str(bare)).returncode == 0
    forged, err = forgery_refused(governed, bare, v, keys[MALLORY])
    assert forged[:12] in err and "is not an allowed signer" in err, err


def test_a_non_admins_policy_edit_does_not_let_its_promotion_in(
    tmp_path: Path, governed: Path, keys: dict[str, Key], hook_python: None
) -> None:
    v = staged(governed, keys)
    bare = server_for(tmp_path, governed)
    clone = cloned(governed, tmp_path / "clone")
    assert push(governed, str(bare)).returncode == 0
    accepted = head_of(bare)

    # bob (an allowed signer, not an admin) signs a policy that lets reviewers promote to
    # production without approvals, then promotes with his key
    granted = POLICY.replace(
        'promoters = ["releasers"]\napprovals = { group = "reviewers", count = 1 }',
        'promoters = ["releasers", "reviewers"]',
    )
    assert granted != POLICY
    (governed / ".uniflow/policy.toml").write_text(granted)
    git(governed, "add", ".uniflow")
    use_key(governed, keys[BOB])
    git(governed, "commit", "-q", "-S", "-m", "reviewers may release")
    forged = forge(governed, v, "production", keys[BOB])

    refused = push(governed, str(bare), "main", *REGISTRY_REFS)  # the edit and the promotion together
    err = refused.stderr.decode()
    assert refused.returncode != 0, err
    assert f"promote {v} (lifecycle commit {forged[:12]}, signed by {BOB})" in err, err
    assert head_of(bare) == accepted

    git(clone, "pull", "-q", "--no-rebase", "origin", "main")  # the edit reaches the clone
    out = cli(clone, "pull", code=None)
    assert out.returncode != 0
    assert f"clf: rejected: promote {v} (lifecycle commit {forged[:12]}, signed by {BOB})" in out.stderr


def test_server_hook_chains_the_hook_that_was_there_and_accepts_valid_pushes(
    tmp_path: Path, governed: Path, keys: dict[str, Key], hook_python: None
) -> None:
    v = staged(governed, keys)
    bare = tmp_path / "srv" / "server.git"
    bare.parent.mkdir()
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    mine = bare / "hooks" / "pre-receive"
    log = tmp_path / "seen.txt"
    mine.write_text(f'#!/bin/sh\ncat >> "{log}"\n')
    mine.chmod(0o755)
    out = cli(tmp_path, "hooks", "install", "--server", str(bare)).stdout
    assert "chained" in out and "no policy on the default branch yet" in out
    assert (bare / "hooks" / "pre-receive.uniflow-chained").read_text().startswith("#!/bin/sh\ncat")

    pushed = push(governed, str(bare), "main", *REGISTRY_REFS)  # the first policy comes with it
    assert pushed.returncode == 0, pushed.stderr.decode()
    assert LIFECYCLE in log.read_text()  # the chained hook saw git's lines
    assert (bare / "uniflow" / "trust-root").is_file()  # trust on first use, in the bare repository

    use_key(governed, keys[BOB])
    as_user(governed, keys[BOB]).approve("clf", v, for_stage="production")
    as_user(governed, keys[CI]).promote("clf", v, "production")
    pushed = push(governed, str(bare))
    assert pushed.returncode == 0, pushed.stderr.decode()
    assert head_of(bare) == head_of(governed)


def test_server_hook_with_a_pinned_trust_root(
    tmp_path: Path, governed: Path, keys: dict[str, Key], hook_python: None
) -> None:
    v = staged(governed, keys)
    bare = tmp_path / "srv" / "server.git"
    bare.parent.mkdir()
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    git(governed, "push", "-q", str(bare), "main")
    root = tmp_path / "admins"
    root.write_text(f"{ALICE} {keys[ALICE].pub_line}\n")
    out = cli(tmp_path, "hooks", "install", "--server", str(bare), "--trust-root", str(root)).stdout
    assert "pinned by --trust-root" in out
    assert push(governed, str(bare)).returncode == 0
    forge(governed, v, "production")
    assert push(governed, str(bare)).returncode != 0

    wrong = tmp_path / "mallory-root"
    wrong.write_text(f"{MALLORY} {keys[MALLORY].pub_line}\n")
    other = tmp_path / "srv" / "other.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(other))
    git(governed, "push", "-q", str(other), "main")
    bad = cli(tmp_path, "hooks", "install", "--server", str(other), "--trust-root", str(wrong), code=None)
    assert bad.returncode != 0 and "error: " in bad.stderr  # alice's policy does not chain from mallory


def test_hooks_install_server_refuses_a_work_tree(tmp_path: Path, governed: Path) -> None:
    out = cli(tmp_path, "hooks", "install", "--server", str(governed), code=None)
    assert out.returncode != 0 and "not a bare Git repository" in out.stderr
    assert not os.path.exists(governed / ".git" / "hooks" / "pre-receive")


# ---------------------------------------------------------------------- the GitHub template
def _verify_step() -> str:
    import yaml

    wf = yaml.safe_load((ROOT / "hooks" / "ci" / "github-verify-registry.yml").read_text())
    return str(next(s["run"] for s in wf["jobs"]["verify"]["steps"] if s.get("name") == "Verify signatures"))


def _run_step(script: str, cwd: Path, env: dict[str, str]) -> Any:
    import subprocess

    full = {**os.environ, **GIT_ENV, "RUNNER_TEMP": str(cwd.parent), **env}
    full["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    full["PYTHONPATH"] = str(ROOT)  # the `uniflow` script runs this checkout
    return subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=full, capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)  # fmt: skip


@pytest.mark.parametrize("pinned", [False, True])
def test_github_verify_step_fails_loudly_on_an_unsigned_promotion(
    tmp_path: Path, governed: Path, keys: dict[str, Key], pinned: bool
) -> None:
    v = staged(governed, keys)
    checkout = tmp_path / "checkout"  # what the workflow has: the full history, then the refs
    git(tmp_path, "clone", "-q", str(governed), str(checkout))
    fetch = ["fetch", "-q", "--force", "origin", "+refs/tags/models/*:refs/tags/models/*"]
    git(checkout, *fetch, "+refs/uniflow/*:refs/uniflow/*")
    env = {"TRUST_ROOT": f"{ALICE} {keys[ALICE].pub_line}" if pinned else ""}
    ok = _run_step(_verify_step(), checkout, env)
    assert ok.returncode == 0, ok.stdout + ok.stderr

    forged = forge(governed, v, "production")
    git(checkout, *fetch, "+refs/uniflow/*:refs/uniflow/*")
    bad = _run_step(_verify_step(), checkout, env)
    assert bad.returncode == 5, bad.stdout + bad.stderr
    assert f"promote {v} (lifecycle commit {forged[:12]}): the promote of {v} to production is unsigned" in (
        bad.stdout
    )


def test_pre_receive_refuses_a_rewound_lifecycle_and_a_moved_version_tag(
    tmp_path: Path, governed: Path, keys: dict[str, Key], hook_python: None
) -> None:
    v = staged(governed, keys)
    bare = server_for(tmp_path, governed)
    assert push(governed, str(bare)).returncode == 0
    accepted = head_of(bare)
    assert accepted is not None
    older = git(governed, "rev-parse", f"{LIFECYCLE}~1").stdout.decode().strip()  # validly signed

    rewound = push(governed, str(bare), f"+{older}:{LIFECYCLE}")  # a rollback attack
    assert rewound.returncode != 0
    assert f"rewrites the lifecycle: {accepted[:12]} is not in the history of {older[:12]}" in (
        rewound.stderr.decode()
    )
    deleted = push(governed, str(bare), f":{LIFECYCLE}")
    assert deleted.returncode != 0 and "a lifecycle is never deleted" in deleted.stderr.decode()
    assert head_of(bare) == accepted

    tag = f"refs/tags/models/clf/{v}"
    before = head_of(bare, tag)
    use_key(governed, keys[ALICE])
    git(governed, "tag", "-f", "-s", "-m", "other bytes", f"models/clf/{v}", "HEAD")  # re-signed elsewhere
    moved = push(governed, str(bare), f"+{tag}:{tag}")
    assert moved.returncode != 0
    assert f"{tag}: a version tag never moves or goes away under a policy" in moved.stderr.decode()
    assert head_of(bare, tag) == before


def test_the_pre_receive_hook_file_matches_what_install_writes() -> None:
    from uniflow.sharing.hooks import SERVER_HOOK, hook_script

    path = ROOT / "hooks" / SERVER_HOOK
    assert path.read_text() == hook_script(SERVER_HOOK), "hooks/pre-receive is stale: regenerate it"
    assert os.access(path, os.X_OK)
    assert "UNIFLOW_NO_HOOKS" not in path.read_text()  # a pusher never skips the server's check


def test_the_post_merge_hooks_pull_applies_the_policy_too(
    tmp_path: Path, governed: Path, keys: dict[str, Key]
) -> None:
    v = staged(governed, keys)
    clone = cloned(governed, tmp_path / "clone")
    before = head_of(clone)
    forge(governed, v, "production")
    out = cli(clone, "hooks", "run", "post-merge", "0")  # what the hook runs after `git pull`
    assert "uniflow post-merge: warning: pull from 'origin' rejected model 'clf'" in out.stderr
    assert head_of(clone) == before
