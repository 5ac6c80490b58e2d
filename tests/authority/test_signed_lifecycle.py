"""Signed versions and lifecycle events on real repositories: keys made by ``ssh-keygen``, the
policy committed with ``git commit -S``, what uniflow signs checked by ``git verify-tag`` and
``git verify-commit``, promotions refused by the policy, and forgeries made with plain git
(``git commit-tree`` + ``git update-ref``, ``git tag -s -f``) flagged by
``uniflow verify --signatures`` and ``uniflow models history --verify``."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import cli, make_repo
from uniflow import ModelRegistry, PolicyError, SigningError
from uniflow._ops.authority import verify_lifecycle

from .conftest import Key, git, make_key

ALICE, BOB, CAROL, CI, MALLORY = (f"{n}@example.com" for n in ("alice", "bob", "carol", "ci", "mallory"))

POLICY = """[admins]
principals = ["alice@example.com"]
[groups]
releasers = ["alice@example.com", "ci@example.com", "carol@example.com"]
reviewers = ["bob@example.com", "carol@example.com"]
[stages.production]
from = ["staging"]
promoters = ["releasers"]
approvals = { group = "reviewers", count = 1 }
require_signed = true
[stages.staging]
promoters = ["releasers", "reviewers"]
"""


@pytest.fixture
def keys(keydir: Path) -> dict[str, Key]:
    return {who: make_key(keydir, who.split("@")[0]) for who in (ALICE, BOB, CAROL, CI, MALLORY)}


def use_key(repo: Path, key: Key | None) -> None:
    """Sign from now on with ``key`` (None: no signing key), as a user configures Git."""
    if key is None:
        git(repo, "config", "--unset", "user.signingKey", check=False)
        return
    git(repo, "config", "gpg.format", "ssh")
    git(repo, "config", "user.signingKey", str(key.path))


def signers_line(who: str, key: Key, options: str = 'namespaces="git"') -> str:
    return f"{who} {options} {key.pub_line}\n"


@pytest.fixture
def governed(tmp_path: Path, keys: dict[str, Key]) -> Path:
    """A repository whose policy (above) alice committed signed; every key but mallory's is an
    allowed signer; Git is told to verify with the same allowed-signers file."""
    repo = make_repo(tmp_path / "repo")
    (repo / ".uniflow").mkdir(exist_ok=True)
    (repo / ".uniflow/policy.toml").write_text(POLICY)
    allowed = "".join(signers_line(who, k) for who, k in keys.items() if who != MALLORY)
    (repo / ".uniflow/allowed_signers").write_text(allowed)
    git(repo, "add", ".uniflow")
    use_key(repo, keys[ALICE])
    git(repo, "commit", "-q", "-S", "-m", "uniflow policy")
    git(repo, "config", "gpg.ssh.allowedSignersFile", str(repo / ".uniflow/allowed_signers"))
    return repo


def register(repo: Path, key: Key | None, tag: int = 0) -> str:
    use_key(repo, key)
    model = repo.parent / f"model-{tag}.bin"
    model.write_bytes(bytes([tag]) * 4096)
    return ModelRegistry(repo).register(str(model), "clf").version


def as_user(repo: Path, key: Key | None) -> ModelRegistry:
    use_key(repo, key)
    return ModelRegistry(repo)


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def staged(repo: Path, keys: dict[str, Key]) -> str:
    """v1 registered by alice and promoted to staging by ci, both signed."""
    v = register(repo, keys[ALICE])
    as_user(repo, keys[CI]).promote("clf", v, "staging")
    return v


# ---------------------------------------------------------------------- signing on write
def test_register_and_promote_are_signed_as_git_signs_and_git_verifies_them(
    governed: Path, keys: dict[str, Key]
) -> None:
    v = staged(governed, keys)
    as_user(governed, keys[BOB]).approve("clf", v, for_stage="production", message="looks good")
    as_user(governed, keys[CI]).promote("clf", v, "production")

    tag = git(governed, "verify-tag", f"models/clf/{v}", check=False)
    assert tag.returncode == 0 and f'Good "git" signature for {ALICE}' in tag.stderr.decode()
    head = git(governed, "verify-commit", "refs/uniflow/models/clf", check=False)
    assert head.returncode == 0 and f'Good "git" signature for {CI}' in head.stderr.decode()
    log = git(governed, "log", "--show-signature", "refs/uniflow/models/clf").stdout.decode()
    assert log.count('Good "git" signature') == 4  # register, staging, approve, production
    assert f'Good "git" signature for {BOB}' in log and "approve clf" in log

    verdicts = verify_lifecycle(ModelRegistry(governed).repository, "clf")
    assert verdicts.ok and verdicts.holder_verified("production")
    assert [(e.action, e.signer) for e in verdicts.events] == [
        ("register", ALICE),
        ("promote", CI),
        ("approve", BOB),
        ("promote", CI),
    ]
    assert verdicts.events[-1].approvers == (BOB,)


def test_without_a_policy_nothing_changes_but_a_configured_key_still_signs(
    tmp_path: Path, keys: dict[str, Key]
) -> None:
    repo = make_repo(tmp_path / "plain")
    v = register(repo, None)
    ModelRegistry(repo).promote("clf", v, "production")  # unsigned, no policy: as before
    assert git(repo, "cat-file", "commit", "refs/uniflow/models/clf").stdout.find(b"gpgsig") < 0
    v2 = register(repo, keys[ALICE], tag=1)
    as_user(repo, keys[ALICE]).promote("clf", v2, "production")
    assert b"gpgsig" in git(repo, "cat-file", "commit", "refs/uniflow/models/clf").stdout
    assert b"SSH SIGNATURE" in git(repo, "cat-file", "tag", f"models/clf/{v2}").stdout
    verdicts = verify_lifecycle(ModelRegistry(repo).repository, "clf")
    assert verdicts.ok and not verdicts.policy
    assert not verdicts.holder_verified("production")  # nothing to verify against


def test_a_stage_that_requires_signatures_refuses_without_a_key_in_one_line(
    governed: Path, keys: dict[str, Key]
) -> None:
    v = register(governed, keys[ALICE])
    use_key(governed, None)
    err = cli(governed, "models", "promote", "clf", v, "--to", "staging", code=2).stderr
    line = one_error_line(err)
    assert "staging names its promoters and no signing key is configured" in line
    assert "user.signingKey" in line
    with pytest.raises(SigningError, match="an approval must be signed"):
        ModelRegistry(governed).approve("clf", v, for_stage="production")


def test_an_event_records_the_version_tag_it_moved(governed: Path, keys: dict[str, Key]) -> None:
    v = register(governed, keys[ALICE])
    event = as_user(governed, keys[CI]).promote("clf", v, "staging")
    assert event.tag == git(governed, "rev-parse", f"refs/tags/models/clf/{v}").stdout.decode().strip()


# ---------------------------------------------------------------------- enforcement at promote
def test_missing_approvals_are_refused_in_one_line(governed: Path, keys: dict[str, Key]) -> None:
    v = staged(governed, keys)
    use_key(governed, keys[CI])
    err = cli(governed, "models", "promote", "clf", v, "--to", "production", code=10).stderr
    assert one_error_line(err) == (
        f"error: cannot promote clf {v} to production: production needs 1 approval of clf {v} "
        "from group reviewers; has 0"
    )
    assert ModelRegistry(governed).get("clf", v).stage == "staging"


def test_an_approval_by_the_registrant_or_the_promoter_does_not_count(
    governed: Path, keys: dict[str, Key]
) -> None:
    v = staged(governed, keys)  # alice registered it
    with pytest.raises(PolicyError, match=f"{ALICE} registered it"):
        as_user(governed, keys[ALICE]).approve("clf", v, for_stage="production")
    as_user(governed, keys[CAROL]).approve("clf", v, for_stage="production")  # a reviewer and a releaser
    with pytest.raises(PolicyError, match=f"not counted: {CAROL} is the promoter"):
        as_user(governed, keys[CAROL]).promote("clf", v, "production")
    as_user(governed, keys[CI]).promote("clf", v, "production")  # someone else may: carol's counts
    assert ModelRegistry(governed).get("clf", v).stage == "production"


def test_an_approval_for_another_version_or_stage_does_not_count(
    governed: Path, keys: dict[str, Key]
) -> None:
    v1 = staged(governed, keys)
    v2 = register(governed, keys[ALICE], tag=2)
    as_user(governed, keys[BOB]).approve("clf", v2, for_stage="production")
    as_user(governed, keys[BOB]).approve("clf", v1, for_stage="staging")
    with pytest.raises(PolicyError) as refused:
        as_user(governed, keys[CI]).promote("clf", v1, "production")
    text = str(refused.value)
    assert "has 0" in text
    assert f"{BOB} approved clf {v1} for staging" in text


def test_a_skipped_stage_is_refused(governed: Path, keys: dict[str, Key]) -> None:
    v = register(governed, keys[ALICE])
    as_user(governed, keys[BOB]).approve("clf", v, for_stage="production")
    with pytest.raises(
        PolicyError, match=f"production may only be promoted from staging; {v} is in development"
    ):
        as_user(governed, keys[CI]).promote("clf", v, "production")


def test_an_unknown_key_is_refused(governed: Path, keys: dict[str, Key]) -> None:
    v = register(governed, keys[ALICE])
    with pytest.raises(PolicyError, match="unsigned or its key is not an allowed signer") as refused:
        as_user(governed, keys[MALLORY]).promote("clf", v, "staging")
    assert "is not an allowed signer" in str(refused.value)  # names the key's problem
    with pytest.raises(PolicyError, match="is not an allowed signer"):
        as_user(governed, keys[MALLORY]).approve("clf", v, for_stage="production")


def test_a_key_past_its_valid_before_is_refused(governed: Path, keys: dict[str, Key]) -> None:
    text = (governed / ".uniflow/allowed_signers").read_text()
    expired = signers_line(CI, keys[CI], 'namespaces="git",valid-before="20200101"')
    text = "".join(line + "\n" for line in text.splitlines() if not line.startswith(CI)) + expired
    (governed / ".uniflow/allowed_signers").write_text(text)
    git(governed, "add", ".uniflow")
    use_key(governed, keys[ALICE])
    git(governed, "commit", "-q", "-S", "-m", "ci key expired")
    v = register(governed, keys[ALICE])
    with pytest.raises(PolicyError, match="after valid-before"):
        as_user(governed, keys[CI]).promote("clf", v, "staging")


# ---------------------------------------------------------------------- forgeries made with plain git
def forge_promotion(repo: Path, version: str, to: str, action: str = "promote") -> str:
    """An unsigned lifecycle commit moving ``version`` to ``to`` in its state.json, its
    event.json saying ``action``, made with plumbing only (``git commit-tree``, ``update-ref``)."""
    head = git(repo, "rev-parse", "refs/uniflow/models/clf").stdout.decode().strip()
    state = json.loads(git(repo, "show", f"{head}:state.json").stdout)
    before = state["stage_of"].get(version, "development")
    state["stage_of"][version] = to
    state["seq"] += 1
    event: dict[str, Any] = {"action": action, "version": version, "from": before, "to": to}
    if action == "approve":
        event.update({"to": before, "for": to})
    event.update(seq=state["seq"], actor="Mallory <mallory@example.com>", at="2026-01-01T00:00:00+00:00")

    def blob(obj: dict[str, Any]) -> str:
        data = (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()
        return git(repo, "hash-object", "-w", "--stdin", data=data).stdout.decode().strip()

    tree_text = f"100644 blob {blob(event)}\tevent.json\n100644 blob {blob(state)}\tstate.json\n"
    tree = git(repo, "mktree", data=tree_text.encode()).stdout.decode().strip()
    commit = (
        git(repo, "commit-tree", tree, "-p", head, "-m", f"{action} clf {version}").stdout.decode().strip()
    )
    git(repo, "update-ref", "refs/uniflow/models/clf", commit, head)
    return commit


def test_an_unsigned_promotion_made_with_raw_git_is_flagged(governed: Path, keys: dict[str, Key]) -> None:
    v = staged(governed, keys)
    assert cli(governed, "verify", "--signatures").stdout.startswith("OK: 1 version tags and 2 lifecycle")
    forged = forge_promotion(governed, v, "production")

    out = cli(governed, "verify", "--signatures", code=5)
    assert f"promote {v} (lifecycle commit {forged[:12]}): the promote of {v} to production is unsigned" in (
        out.stdout
    )
    assert "1 signature or policy failure found" in one_error_line(out.stderr)
    history = cli(governed, "models", "history", "clf", "--verify", "--json", code=5)
    events = json.loads(history.stdout)["events"]
    assert [(e["action"], e["signer"], e["ok"]) for e in events] == [
        ("register", ALICE, True),
        ("promote", CI, True),
        ("promote", None, False),
    ]
    assert "needs 1 approval" in events[-1]["reason"]
    verdicts = verify_lifecycle(ModelRegistry(governed).repository, "clf")
    assert not verdicts.holder_verified("production")
    assert "not signed by an allowed signer" in (verdicts.holder_problem("production") or "")
    text = cli(governed, "models", "history", "clf", "--verify", code=5).stdout
    assert "FAIL" in text and "unsigned" in text


def test_a_state_the_events_do_not_explain_is_flagged(governed: Path, keys: dict[str, Key]) -> None:
    """A forged commit whose event says "approve" (no move) while its state.json moves the
    version to production: the replayed events disagree with the head state."""
    v = staged(governed, keys)
    forge_promotion(governed, v, "production", action="approve")
    assert ModelRegistry(governed).get("clf", v).stage == "production"  # what plain reads see
    verdicts = verify_lifecycle(ModelRegistry(governed).repository, "clf")
    assert verdicts.problems and "does not follow from its events" in verdicts.problems[0]
    assert f"{v} in production (events say staging)" in verdicts.problems[0]
    assert not verdicts.holder_verified("production") and not verdicts.holder_verified("staging")
    assert any("an approval must be signed" in f for f in verdicts.failures())


def test_a_version_tag_re_signed_over_another_manifest_is_flagged(
    governed: Path, keys: dict[str, Key]
) -> None:
    v1 = register(governed, keys[ALICE])
    v2 = register(governed, keys[ALICE], tag=1)
    assert cli(governed, "verify", "--signatures").stdout.startswith("OK")
    other = git(governed, "rev-parse", f"models/clf/{v2}^{{commit}}").stdout.decode().strip()
    use_key(governed, keys[ALICE])  # even an allowed signer's new tag is not the registered one
    git(governed, "tag", "-s", "-f", "-m", "re-signed", f"models/clf/{v1}", other)
    assert git(governed, "verify-tag", f"models/clf/{v1}", check=False).returncode == 0  # Git is satisfied

    out = cli(governed, "verify", "--signatures", "--json", code=5)
    failures = json.loads(out.stdout)["failures"]
    assert any(f"clf {v1}: tag" in f and "not the tag its register event" in f for f in failures), failures


def test_audit_shows_who_promoted_and_approved_what_held_each_stage(
    governed: Path, keys: dict[str, Key]
) -> None:
    v1 = staged(governed, keys)
    as_user(governed, keys[BOB]).approve("clf", v1, for_stage="production")
    as_user(governed, keys[CI]).promote("clf", v1, "production")
    repo = ModelRegistry(governed).repository
    at = verify_lifecycle(repo, "clf").events[-1].at

    data = json.loads(cli(governed, "models", "audit", "clf", "--at", at.isoformat(), "--json").stdout)
    assert [
        (s["stage"], s["version"], s["promoted_by"], s["approved_by"], s["ok"]) for s in data["stages"]
    ] == [("production", v1, CI, [BOB], True)]
    before = json.loads(cli(governed, "models", "audit", "clf", "--at", "2000-01-01", "--json").stdout)
    assert before["stages"] == []
    text = cli(governed, "models", "audit", "clf", "--at", at.isoformat()).stdout
    assert "production" in text and CI in text and BOB in text
    bad = cli(governed, "models", "audit", "clf", "--at", "yesterday", code=2).stderr
    assert "is not an ISO-8601 time" in one_error_line(bad)


def test_an_approval_event_reads_back_and_leaves_every_stage_alone(
    governed: Path, keys: dict[str, Key]
) -> None:
    v = staged(governed, keys)
    out = cli(governed, "models", "approve", "clf", v, "--for", "production", "-m", "ok", "--json", code=None)
    assert out.returncode == 10 and f"{CI} is not in group reviewers" in one_error_line(out.stderr)
    use_key(governed, keys[BOB])
    event = json.loads(cli(governed, "models", "approve", "clf", v, "--for", "production", "--json").stdout)
    assert event["action"] == "approve" and event["for"] == "production"
    assert event["from"] == event["to"] == "staging"
    assert ModelRegistry(governed).get("clf", v).stage == "staging"
    history = ModelRegistry(governed).history("clf")
    assert [e.action for e in history] == ["register", "promote", "approve"]


def test_git_verify_commit_fails_on_a_forgery_too(governed: Path, keys: dict[str, Key]) -> None:
    v = staged(governed, keys)
    forge_promotion(governed, v, "production")
    proc = subprocess.run(
        ["git", "verify-commit", "refs/uniflow/models/clf"], cwd=governed, capture_output=True, timeout=60
    )
    assert proc.returncode != 0


# ---------------------------------------------------------------------- promote-on-merge
def test_promote_on_merge_signs_with_the_ci_key_and_obeys_the_policy(
    governed: Path, keys: dict[str, Key]
) -> None:
    rules = '[[promote]]\nmodel = "clf"\nfrom = "staging"\nto = "production"\nwhen = ["accuracy >= 0.9"]\n'
    (governed / ".uniflow/config.toml").write_text(rules)
    git(governed, "add", ".uniflow/config.toml")
    git(governed, "commit", "-q", "-m", "promote rules")
    git(governed, "checkout", "-q", "-b", "feature")
    (governed / "train.py").write_text("print('better')\n")
    git(governed, "commit", "-q", "-am", "train better")
    use_key(governed, keys[ALICE])
    model = governed.parent / "model.bin"
    model.write_bytes(b"m" * 4096)
    v = ModelRegistry(governed).register(str(model), "clf", metrics={"accuracy": 0.95}).version
    as_user(governed, keys[CI]).promote("clf", v, "staging")
    git(governed, "checkout", "-q", "main")
    base = git(governed, "rev-parse", "HEAD").stdout.decode().strip()
    git(governed, "merge", "-q", "--no-ff", "feature", "-m", "Merge feature")
    head = git(governed, "rev-parse", "HEAD").stdout.decode().strip()

    use_key(governed, keys[CI])
    refused = cli(governed, "ci", "promote-on-merge", "--base", base, "--head", head, code=10)
    assert f"cannot promote clf {v} to production: production needs 1 approval" in refused.stderr
    assert ModelRegistry(governed).get("clf", v).stage == "staging"

    as_user(governed, keys[BOB]).approve("clf", v, for_stage="production")
    use_key(governed, keys[CI])
    done = cli(governed, "ci", "promote-on-merge", "--base", base, "--head", head)
    assert f"promoted clf {v} to production" in done.stdout
    verified = git(governed, "verify-commit", "refs/uniflow/models/clf", check=False)
    assert verified.returncode == 0 and f'Good "git" signature for {CI}' in verified.stderr.decode()
    assert verify_lifecycle(ModelRegistry(governed).repository, "clf").holder_verified("production")


# ---------------------------------------------------------------------- kept verdicts
def test_kept_verdicts_never_change_a_verdict(governed: Path, keys: dict[str, Key]) -> None:
    """Verdicts are kept in the derived cache under the lifecycle head and resumed from after
    new events; what comes out equals a verification from scratch, and a damaged or forged
    entry is ignored."""
    import shutil

    v = staged(governed, keys)
    repo = ModelRegistry(governed).repository
    first = verify_lifecycle(repo, "clf")
    kept = repo.store.root / "cache" / "git" / "verdicts"
    assert first.ok and any(kept.rglob("*"))
    forge_promotion(governed, v, "production")
    resumed = verify_lifecycle(ModelRegistry(governed).repository, "clf")
    assert not resumed.ok and [e.ok for e in resumed.events] == [True, True, False]
    for entry in [p for p in kept.rglob("*") if p.is_file()]:
        entry.write_bytes(b"\0" * 32 + entry.read_bytes()[32:])  # a MAC that does not verify
    assert verify_lifecycle(ModelRegistry(governed).repository, "clf").to_dict() == resumed.to_dict()
    shutil.rmtree(repo.store.root / "cache" / "git")
    assert verify_lifecycle(ModelRegistry(governed).repository, "clf").to_dict() == resumed.to_dict()
    # a version tag moved: verdicts kept for the old tags are not used
    other = register(governed, keys[ALICE], tag=9)
    verify_lifecycle(ModelRegistry(governed).repository, "clf")  # kept under the new head
    target = git(governed, "rev-parse", f"models/clf/{other}^{{commit}}").stdout.decode().strip()
    git(governed, "tag", "-s", "-f", "-m", "moved", f"models/clf/{v}", target)
    after = verify_lifecycle(ModelRegistry(governed).repository, "clf")
    staging = after.events[1]
    assert staging.action == "promote" and not staging.ok and "no longer" in staging.reason
