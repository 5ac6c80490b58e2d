"""Co-signed policy changes (``threshold`` > 1) on real repositories: keys made by
``ssh-keygen``, co-signatures written by ``uniflow policy sign`` (or ``ssh-keygen -Y sign``),
commits made with ``git commit -S``, squash merges made with ``git merge --squash``, the chain
read back with ``uniflow policy check --json``."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import cli, make_repo
from uniflow._authority.cosign import COSIGN_NAMESPACE, statement

from .conftest import Key, git, make_key, ssh_keygen
from .test_policy_wiring import check, commit, one_error_line

ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
MALLORY = "mallory@example.com"
ADMINS = [ALICE, BOB, CAROL]
SIGS = ".uniflow/policy-signatures"


def policy_text(releasers: list[str], threshold: int = 2) -> str:
    return (
        f"[admins]\nprincipals = {json.dumps(ADMINS)}\nthreshold = {threshold}\n"
        f"[groups]\nreleasers = {json.dumps(releasers)}\n"
        '[stages.production]\npromoters = ["releasers"]\nrequire_signed = true\n'
    )


def signers_text(keys: dict[str, Key], options: dict[str, str] | None = None) -> str:
    """Every key's line, allowed to sign commits and co-signatures (``options``: extra per principal)."""
    extra = options or {}
    return "".join(
        f'{who} namespaces="git,{COSIGN_NAMESPACE}"{extra.get(who, "")} {key.pub_line}\n'
        for who, key in keys.items()
    )


@pytest.fixture
def keys(keydir: Path) -> dict[str, Key]:
    return {who: make_key(keydir, who.split("@")[0]) for who in (ALICE, BOB, CAROL, MALLORY)}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


def govern(repo: Path, keys: dict[str, Key], options: dict[str, str] | None = None) -> str:
    """Commit the first policy (alice, bob, carol admins, 2 must sign) signed by alice, and
    record it as the trust root; its commit id."""
    files = {
        ".uniflow/policy.toml": policy_text([ALICE]),
        ".uniflow/allowed_signers": signers_text(keys, options),
    }
    first = commit(repo, keys[ALICE], "policy", files)
    check(repo)
    return first


def write(repo: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(text)


def sign(repo: Path, key: Key, *args: str, code: int = 0) -> Any:
    """``uniflow policy sign --json`` with ``key`` as Git's signing key."""
    git(repo, "config", "gpg.format", "ssh")
    git(repo, "config", "user.signingKey", str(key.path))
    out = cli(repo, "policy", "sign", "--json", *args, code=code)
    return json.loads(out.stdout) if code == 0 else out.stderr


def land(repo: Path, key: Key | None, message: str = "policy change") -> str:
    """Commit everything under .uniflow (signed with ``key``; None: unsigned)."""
    git(repo, "add", "-A", ".uniflow")
    return commit(repo, key, message)


def last(repo: Path) -> dict[str, Any]:
    data = check(repo)
    verdict = data["revisions"][-1]
    assert isinstance(verdict, dict)
    return {**verdict, "in_force": data["in_force"]["commit"]}


# ---------------------------------------------------------------------- threshold met
def test_threshold_two_met_by_the_commit_signature_and_one_cosignature(
    repo: Path, keys: dict[str, Key]
) -> None:
    first = govern(repo, keys)
    write(repo, {".uniflow/policy.toml": policy_text([ALICE, MALLORY])})
    alone = land(repo, keys[ALICE], "alice alone")
    verdict = last(repo)
    assert verdict["commit"] == alone and not verdict["accepted"] and verdict["in_force"] == first
    assert "a change needs 2 of" in verdict["reason"]

    write(repo, {".uniflow/policy.toml": policy_text([ALICE, MALLORY, CAROL])})
    signed = sign(repo, keys[BOB])
    assert signed["principal"] == BOB and signed["previous"] == first
    assert signed["cosigners"] == [BOB] and signed["threshold"] == 2
    path = Path(signed["path"])
    assert path == repo / SIGS / f"{BOB}.sig"
    # OpenSSH itself verifies the co-signature over the statement it prints
    allowed = repo.parent / "allowed"
    allowed.write_text((repo / ".uniflow/allowed_signers").read_text())
    proc = ssh_keygen(
        "-Y", "verify", "-f", str(allowed), "-I", BOB, "-n", COSIGN_NAMESPACE, "-s", str(path),
        data=signed["statement"].encode(),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    change = land(repo, keys[ALICE])
    verdict = last(repo)
    assert verdict["commit"] == change and verdict["accepted"], verdict
    assert verdict["in_force"] == change
    assert verdict["signers"] == [ALICE, BOB]
    assert verdict["committed_by"] == [ALICE] and verdict["cosigned_by"] == [BOB]
    text = cli(repo, "policy", "check").stdout
    assert f"commit signed by {ALICE}; co-signed by {BOB}" in text


def test_threshold_two_met_by_two_cosignatures_on_an_unsigned_squash_merge(
    repo: Path, keys: dict[str, Key], keydir: Path
) -> None:
    govern(repo, keys)
    git(repo, "checkout", "-q", "-b", "feature")
    write(repo, {".uniflow/policy.toml": policy_text([ALICE, CAROL])})
    assert sign(repo, keys[ALICE])["cosigners"] == [ALICE]
    assert sign(repo, keys[CAROL])["cosigners"] == [ALICE, CAROL]
    land(repo, keys[ALICE], "on the branch")
    # the hosting service squashes with its own key, which no allowed-signers line names
    git(repo, "checkout", "-q", "main")
    commit(repo, None, "unrelated work on main", {"train.py": "print('v2')\n"})
    git(repo, "merge", "-q", "--squash", "feature")
    squashed = commit(repo, make_key(keydir, "hosting-service"), "Squashed policy change (#7)")
    verdict = last(repo)
    assert verdict["commit"] == squashed and verdict["accepted"], verdict
    assert verdict["committed_by"] == [] and verdict["cosigned_by"] == [ALICE, CAROL]
    # removing the signature files afterwards is not a policy change
    git(repo, "rm", "-q", "-r", SIGS)
    commit(repo, keys[MALLORY], "tidy")
    after = check(repo)
    assert after["in_force"]["commit"] == squashed and after["revisions"][-1]["commit"] == squashed


# ---------------------------------------------------------------------- refused
def test_two_signatures_of_one_principal_are_one(repo: Path, keys: dict[str, Key]) -> None:
    govern(repo, keys)
    write(repo, {".uniflow/policy.toml": policy_text([ALICE, MALLORY])})
    path = Path(sign(repo, keys[ALICE])["path"])
    shutil.copy(path, path.with_name("alice-again.sig"))
    land(repo, keys[ALICE])  # her commit signature too: still one admin
    verdict = last(repo)
    assert not verdict["accepted"] and verdict["signers"] == [ALICE], verdict
    assert "signed by 1 admin of the policy in force" in verdict["reason"]


def test_a_cosignature_replayed_from_an_earlier_change_is_refused(repo: Path, keys: dict[str, Key]) -> None:
    first = govern(repo, keys)
    grant = {".uniflow/policy.toml": policy_text([ALICE, MALLORY])}
    write(repo, grant)
    sign(repo, keys[BOB])
    granted = land(repo, keys[ALICE], "grant mallory")
    assert last(repo)["accepted"]
    # the admins revoke her (new co-signature files replace the old ones)
    write(repo, {".uniflow/policy.toml": policy_text([ALICE])})
    sign(repo, keys[BOB])
    revoked = land(repo, keys[CAROL], "revoke mallory")
    assert last(repo)["accepted"] and last(repo)["in_force"] == revoked
    # mallory replays the grant: the same content, with the old co-signatures, from the
    # same policy content as the first grant's base: refused, its base is another revision
    git(repo, "checkout", granted, "--", ".uniflow")
    assert (repo / ".uniflow/policy.toml").read_text() == grant[".uniflow/policy.toml"]
    replay = land(repo, keys[MALLORY], "grant me again")
    verdict = last(repo)
    assert verdict["commit"] == replay and not verdict["accepted"] and verdict["in_force"] == revoked
    assert verdict["cosigned_by"] == [] and len(verdict["ignored_cosignatures"]) == 1
    assert "signs another change or another base" in verdict["ignored_cosignatures"][0]
    assert first != revoked


def test_cosignatures_of_a_non_admin_or_an_unknown_key_are_refused(
    repo: Path, keys: dict[str, Key], keydir: Path
) -> None:
    govern(repo, keys)
    dave = make_key(keydir, "dave")
    # the change names dave an admin and adds his key: verified against the keys before it
    new_signers = signers_text({**keys, "dave@example.com": dave})
    write(repo, {".uniflow/policy.toml": policy_text([ALICE]).replace(CAROL, "dave@example.com")})
    write(repo, {".uniflow/allowed_signers": new_signers})
    err = sign(repo, keys[MALLORY], code=10)
    assert "co-signature could never count" in one_error_line(err) and "not an admin" in err
    message = statement(
        git(repo, "rev-parse", "HEAD").stdout.decode().strip(),
        git(repo, "show", "HEAD:.uniflow/policy.toml").stdout,
        git(repo, "show", "HEAD:.uniflow/allowed_signers").stdout,
        (repo / ".uniflow/policy.toml").read_bytes(),
        new_signers.encode(),
    )
    for who, key in (("mallory", keys[MALLORY]), ("dave", dave)):
        out = ssh_keygen("-Y", "sign", "-n", COSIGN_NAMESPACE, "-f", str(key.path), data=message)
        assert out.returncode == 0, out.stderr
        write(repo, {f"{SIGS}/{who}.sig": out.stdout.decode()})
    land(repo, keys[ALICE])
    verdict = last(repo)
    assert not verdict["accepted"] and verdict["signers"] == [ALICE], verdict
    ignored = verdict["ignored_cosignatures"]
    assert any(line.startswith("dave.sig: key ") and "is not in" in line for line in ignored), ignored
    assert f"mallory.sig: {MALLORY} is not an admin" in ignored


def test_a_cosignature_made_before_valid_before_does_not_count_after_it(
    repo: Path, keys: dict[str, Key], monkeypatch: pytest.MonkeyPatch
) -> None:
    govern(repo, keys, {BOB: ',valid-before="20300101"'})
    write(repo, {".uniflow/policy.toml": policy_text([ALICE, MALLORY])})
    assert sign(repo, keys[BOB])["cosigners"] == [BOB]  # valid now
    monkeypatch.setenv("GIT_COMMITTER_DATE", "2031-06-01T12:00:00Z")
    land(repo, keys[ALICE], "landed after bob's key expired")
    verdict = last(repo)
    assert not verdict["accepted"], verdict
    assert any("after valid-before" in line for line in verdict["ignored_cosignatures"]), verdict


def test_a_cosignature_in_the_git_namespace_or_with_a_line_without_the_namespace_is_refused(
    repo: Path, keys: dict[str, Key]
) -> None:
    first = govern(repo, keys)
    only_git = (repo / ".uniflow/allowed_signers").read_text().replace(f",{COSIGN_NAMESPACE}", "")
    write(repo, {".uniflow/allowed_signers": only_git})
    sign(repo, keys[BOB])
    land(repo, keys[ALICE], "commits only from now on")
    assert last(repo)["accepted"]
    write(repo, {".uniflow/policy.toml": policy_text([ALICE, MALLORY])})
    err = sign(repo, keys[BOB], code=10)
    assert "namespace 'uniflow-policy' is not in namespaces='git'" in one_error_line(err)
    assert first


# ---------------------------------------------------------------------- hostile files
def test_forged_oversized_and_odd_signature_files_are_reasons_not_crashes(
    repo: Path, keys: dict[str, Key]
) -> None:
    govern(repo, keys)
    write(repo, {".uniflow/policy.toml": policy_text([ALICE, MALLORY])})
    sign(repo, keys[BOB])
    sigs = repo / SIGS
    (sigs / "garbage.sig").write_bytes(os.urandom(300))
    (sigs / "forged.sig").write_text(
        "-----BEGIN SSH SIGNATURE-----\nU1NIU0lHAAAAAQ==\n-----END SSH SIGNATURE-----\n"
    )
    (sigs / "huge.sig").write_text("A" * 40_000)
    (sigs / "link.sig").symlink_to(f"{BOB}.sig")
    (sigs / "nested.sig").mkdir()
    (sigs / "nested.sig" / "x.sig").write_text("x")
    (sigs / "README.md").write_text("not a signature")
    change = land(repo, keys[ALICE])
    verdict = last(repo)
    assert verdict["commit"] == change and verdict["accepted"], verdict
    ignored = {line.split(":", 1)[0]: line for line in verdict["ignored_cosignatures"]}
    assert set(ignored) == {"garbage.sig", "forged.sig", "huge.sig", "link.sig", "nested.sig"}
    assert all("\n" not in line for line in ignored.values())
    assert "a symbolic link, not a file" in ignored["link.sig"]
    assert "a folder (nesting is refused), not a file" in ignored["nested.sig"]
    assert "refused before inflating it" in ignored["huge.sig"]
    assert "truncated" in ignored["forged.sig"]


def test_more_signature_files_than_the_limit_are_cut_with_one_reason(
    repo: Path, keys: dict[str, Key]
) -> None:
    govern(repo, keys)
    write(repo, {".uniflow/policy.toml": policy_text([ALICE, MALLORY])})
    sign(repo, keys[BOB])
    for n in range(70):
        (repo / SIGS / f"a{n:03d}.sig").write_text("junk")
    land(repo, keys[ALICE])
    verdict = last(repo)
    # the first 64 by name are junk; bob's is past the limit, so only alice's commit counts
    assert not verdict["accepted"] and verdict["cosigned_by"] == []
    assert verdict["ignored_cosignatures"][-1] == "7 more: more than 64 co-signature files"
    assert len(verdict["ignored_cosignatures"]) == 65


def test_sign_refuses_a_work_tree_that_changes_nothing(repo: Path, keys: dict[str, Key]) -> None:
    govern(repo, keys)
    err = sign(repo, keys[BOB], code=2)
    assert "there is no change to sign" in one_error_line(err)


def test_a_mirror_fetches_the_signature_files_with_the_policy_files(repo: Path, keys: dict[str, Key]) -> None:
    from uniflow._records.git import GitRepo
    from uniflow._records.policyfiles import policy_blob_ids

    govern(repo, keys)
    write(repo, {".uniflow/policy.toml": policy_text([ALICE, MALLORY])})
    sign(repo, keys[BOB])
    tip = land(repo, keys[ALICE])
    sig_blob = git(repo, "rev-parse", f"{tip}:{SIGS}/{BOB}.sig").stdout.decode().strip()
    complete, ids = policy_blob_ids(GitRepo(repo), tip)
    assert complete and sig_blob in ids
