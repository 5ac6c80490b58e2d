"""Push races (issue 12): two clones promote the same model and push at the same time. The
loser's push is refused atomically (nothing of it lands) with the documented one line that
names the lifecycle ref and says to run `uniflow pull`, exit 9, never git's generic "failed
to push some refs"; the winner's promotion is intact; pull then push lands the loser's event.

Real git throughout, a bare remote on disk. The race is made deterministic two ways:

* A is held after its checks (ls-remote, fast-forward check, upload), B pushes, A goes on:
  A's `git push` sees the remote moved (fetch first / non-fast-forward / stale lease);
* B pushes from inside A's `git push` (A's pre-push hook), after the remote advertised its
  refs to A: the remote itself refuses A's update ("cannot lock ref ...: is at X but
  expected Y"), the race as it happens between two machines.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from tests.adversarial._inflight import Held
from tests.helpers import ROOT, cli, clone, git, log_subjects, model_dir, shared_setup

REF = "refs/uniflow/models/m"


def _two_clones(tmp_path: Path) -> tuple[Path, Path, Path]:
    """``(bare, a, b)``: m v1.0.0 and v1.1.0 registered and pushed from a, pulled into b;
    then b promotes v1.0.0 to staging and a v1.1.0 to production, neither pushed yet."""
    bare, a = shared_setup(tmp_path)
    src = model_dir(tmp_path / "src", 2, size=1000, seed=7)
    cli(a, "models", "register", str(src), "--name", "m", "--version", "v1.0.0")
    cli(a, "models", "register", str(src), "--name", "m", "--version", "v1.1.0")
    cli(a, "push")
    b = clone(bare, tmp_path / "b")
    cli(b, "pull")
    cli(b, "models", "promote", "m", "v1.0.0", "--to", "staging")
    cli(a, "models", "promote", "m", "v1.1.0", "--to", "production")
    return bare, a, b


def _assert_documented_refusal(stderr: str, code: int) -> None:
    assert code == 9, (code, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "someone promoted" in lines[0] and REF in lines[0] and "uniflow pull" in lines[0], stderr
    assert "failed to push some refs" not in stderr, stderr


def _assert_winner_intact_then_loser_lands(bare: Path, a: Path, b: Path) -> None:
    assert git(bare, "rev-parse", REF) == git(b, "rev-parse", REF)
    assert git(bare, "rev-parse", "refs/uniflow/stages/m/staging") == git(
        b, "rev-parse", "refs/tags/models/m/v1.0.0"
    )
    assert "refs/uniflow/stages/m/production" not in git(bare, "for-each-ref", "refs/uniflow")
    cli(a, "pull")
    cli(a, "push")
    subjects = log_subjects(bare, REF)
    assert any("v1.0.0: development -> staging" in s for s in subjects), subjects
    assert any("v1.1.0: development -> production" in s for s in subjects), subjects
    assert "refs/uniflow/stages/m/production" in git(bare, "for-each-ref", "refs/uniflow")


def test_a_push_made_stale_after_its_checks_gets_the_documented_error(tmp_path: Path) -> None:
    bare, a, b = _two_clones(tmp_path)
    held = Held(a, tmp_path / "gate", "push-before-git-push", "push")
    held.wait_paused()  # A has listed the remote and found its push a fast-forward
    cli(b, "push")
    r = held.release()
    _assert_documented_refusal(r.stderr, r.returncode)
    _assert_winner_intact_then_loser_lands(bare, a, b)


def _push_from_b_inside_as_push(tmp_path: Path, a: Path, b: Path) -> Path:
    """Install a pre-push hook in ``a`` that runs ``uniflow push`` in ``b`` once: after the
    remote advertised its refs to a's `git push`, before a's update reaches it."""
    hook = a / ".git" / "hooks" / "pre-push"
    marker = tmp_path / "b-pushed"
    unset = "-u GIT_DIR -u GIT_WORK_TREE -u GIT_INDEX_FILE -u GIT_PREFIX -u UNIFLOW_IN_PUSH"
    hook.write_text(
        "#!/bin/sh\n"
        "cat >/dev/null\n"
        f"[ -e {shlex.quote(str(marker))} ] && exit 0\n"
        f"touch {shlex.quote(str(marker))}\n"
        f"cd {shlex.quote(str(b))} && env {unset} PYTHONPATH={shlex.quote(str(ROOT))} "
        f"{shlex.quote(sys.executable)} -m uniflow push >/dev/null 2>&1 || exit 1\n"
    )
    hook.chmod(0o755)
    return marker


def test_a_push_overtaken_on_the_remote_gets_the_documented_error(tmp_path: Path) -> None:
    bare, a, b = _two_clones(tmp_path)
    marker = _push_from_b_inside_as_push(tmp_path, a, b)
    r = cli(a, "push", code=None)
    assert marker.exists()
    _assert_documented_refusal(r.stderr, r.returncode)
    (a / ".git" / "hooks" / "pre-push").unlink()
    _assert_winner_intact_then_loser_lands(bare, a, b)


def test_a_version_pushed_meanwhile_with_other_bytes_is_the_version_refusal(tmp_path: Path) -> None:
    """Both clones register v2.0.0 with different bytes; b's push lands inside a's: a is told
    the version exists there with other content, in one line, and nothing of a's lands."""
    bare, a, b = _two_clones(tmp_path)
    for clone_dir, seed in ((a, 8), (b, 9)):
        src = model_dir(tmp_path / f"v2-{seed}", 2, size=1000, seed=seed)
        cli(clone_dir, "models", "register", str(src), "--name", "m", "--version", "v2.0.0")
    marker = _push_from_b_inside_as_push(tmp_path, a, b)
    r = cli(a, "push", code=None)
    assert marker.exists()
    assert r.returncode == 9, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "m/v2.0.0" in r.stderr and "different content" in r.stderr, r.stderr
    tag = "refs/tags/models/m/v2.0.0"
    assert git(bare, "rev-parse", tag) == git(b, "rev-parse", tag)
    assert git(bare, "rev-parse", REF) == git(b, "rev-parse", REF)
