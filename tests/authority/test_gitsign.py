"""Commits and tags signed in Git's format: ours verified by ``git verify-commit``/``verify-tag``
and ``git log --show-signature``; ``git commit -S``/``git tag -s`` verified by ours."""

from __future__ import annotations

from pathlib import Path

import pytest

from uniflow import SignatureError
from uniflow._authority.gitsign import (
    sign_commit,
    sign_tag,
    split_commit,
    split_tag,
    verify_commit,
    verify_tag,
)
from uniflow._authority.signing import load_signer

from .conftest import Key, git, make_key, signers_of, write_allowed


def write_object(repo: Path, kind: str, raw: bytes) -> str:
    return git(repo, "hash-object", "-t", kind, "-w", "--stdin", data=raw).stdout.decode().strip()


def test_commit_signed_by_us_verifies_with_git(repo: Path, key: Key) -> None:
    raw = git(repo, "cat-file", "commit", "HEAD").stdout
    signed = sign_commit(raw, load_signer(str(key.path)))
    assert (
        signed.startswith(raw[: raw.index(b"\n\n")])
        and b"\ngpgsig -----BEGIN SSH SIGNATURE-----\n " in signed
    )
    assert split_commit(signed).payload == raw  # the signed payload is the commit without the header
    sha = write_object(repo, "commit", signed)
    git(repo, "update-ref", "refs/heads/signed", sha)
    verified = git(repo, "verify-commit", "signed", check=False)
    assert verified.returncode == 0, verified.stderr
    kind = {"ssh-ed25519": "ED25519", "ecdsa-sha2-nistp256": "ECDSA"}[key.public.algorithm]
    good = f'Good "git" signature for test@example.com with {kind} key {key.public.fingerprint}'
    assert good in verified.stderr.decode()
    log = git(repo, "log", "--show-signature", "-1", "signed").stdout.decode()
    assert 'Good "git" signature for test@example.com' in log and key.public.fingerprint in log
    verdict = verify_commit(signed, signers_of(repo))
    assert (
        verdict.ok
        and verdict.principal == "test@example.com"
        and verdict.fingerprint == key.public.fingerprint
    )


def test_tag_signed_by_us_verifies_with_git(repo: Path, key: Key) -> None:
    git(repo, "tag", "-a", "models/clf/v1.0.0", "-m", "clf 1.0.0\n\nmanifest abc")
    raw = git(repo, "cat-file", "tag", "models/clf/v1.0.0").stdout
    signed = sign_tag(raw, load_signer(str(key.path)))
    assert signed.startswith(raw) and split_tag(signed).payload == raw
    git(repo, "update-ref", "refs/tags/signed", write_object(repo, "tag", signed))
    verified = git(repo, "verify-tag", "signed", check=False)
    assert verified.returncode == 0 and b'Good "git" signature for test@example.com' in verified.stderr
    assert verify_tag(signed, signers_of(repo)).ok


def test_git_commit_and_tag_signed_by_git_verify_with_ours(repo: Path, key: Key) -> None:
    git(repo, "config", "user.signingKey", str(key.path))
    git(repo, "commit", "-S", "--allow-empty", "-q", "-m", "promote clf\n\nbody line")
    git(repo, "tag", "-s", "v1", "-m", "signed by git")
    raw = git(repo, "cat-file", "commit", "HEAD").stdout
    verdict = verify_commit(raw, signers_of(repo))
    assert verdict.ok, verdict.reason
    tag = git(repo, "cat-file", "tag", "v1").stdout
    assert verify_tag(tag, signers_of(repo)).ok
    with pytest.raises(SignatureError, match="already signed"):
        sign_commit(raw, load_signer(str(key.path)))
    with pytest.raises(SignatureError, match="already signed"):
        sign_tag(tag, load_signer(str(key.path)))


def test_sha256_repository(tmp_path: Path, key: Key) -> None:
    repo = tmp_path / "repo256"
    git(tmp_path, "init", "-q", "--object-format=sha256", str(repo))
    write_allowed(tmp_path / "allowed", f"test@example.com {key.pub_line}")
    for k, v in {"gpg.format": "ssh", "gpg.ssh.allowedSignersFile": str(tmp_path / "allowed")}.items():
        git(repo, "config", k, v)
    git(repo, "-c", f"user.signingKey={key.path}", "commit", "-S", "--allow-empty", "-q", "-m", "by git")
    raw = git(repo, "cat-file", "commit", "HEAD").stdout
    assert b"\ngpgsig-sha256 " in raw
    assert verify_commit(raw, signers_of(repo), object_format="sha256").ok
    unsigned = split_commit(raw, "sha256").payload
    signed = sign_commit(unsigned, load_signer(str(key.path)), object_format="sha256")
    git(repo, "update-ref", "refs/heads/ours", write_object(repo, "commit", signed))
    assert git(repo, "verify-commit", "ours", check=False).returncode == 0


def test_tampered_commit_is_refused_by_both(repo: Path, key: Key) -> None:
    signed = sign_commit(git(repo, "cat-file", "commit", "HEAD").stdout, load_signer(str(key.path)))
    forged = signed.replace(b"initial code", b"initial c0de")
    git(repo, "update-ref", "refs/heads/forged", write_object(repo, "commit", forged))
    assert git(repo, "verify-commit", "forged", check=False).returncode != 0
    verdict = verify_commit(forged, signers_of(repo))
    assert not verdict.ok and verdict.reason.startswith("signature does not match the signed data")


def test_unknown_key_and_expired_key_are_refused_by_both(repo: Path, key: Key, keydir: Path) -> None:
    raw = git(repo, "cat-file", "commit", "HEAD").stdout
    stranger = make_key(keydir, "mallory", "ed25519")
    by_stranger = sign_commit(raw, load_signer(str(stranger.path)))
    git(repo, "update-ref", "refs/heads/stranger", write_object(repo, "commit", by_stranger))
    assert git(repo, "verify-commit", "stranger", check=False).returncode != 0
    verdict = verify_commit(by_stranger, signers_of(repo))
    assert not verdict.ok and "is not in" in verdict.reason
    # the key was retired before the commit was made: Git and uniflow check at the committer date
    allowed = git(repo, "config", "gpg.ssh.allowedSignersFile").stdout.decode().strip()
    write_allowed(Path(allowed), f'test@example.com valid-before="20000101Z" {key.pub_line}')
    signed = sign_commit(raw, load_signer(str(key.path)))
    git(repo, "update-ref", "refs/heads/late", write_object(repo, "commit", signed))
    assert git(repo, "verify-commit", "late", check=False).returncode != 0
    verdict = verify_commit(signed, signers_of(repo))
    assert not verdict.ok and "after valid-before 2000-01-01T00:00:00Z" in verdict.reason
    assert verify_commit(signed, signers_of(repo), when=946684700).ok  # an explicit time before it


def test_unsigned_objects_fail_with_a_reason(repo: Path) -> None:
    raw = git(repo, "cat-file", "commit", "HEAD").stdout
    verdict = verify_commit(raw, signers_of(repo))
    assert not verdict.ok and verdict.reason == "the commit is not signed"
    git(repo, "tag", "-a", "v0", "-m", "plain")
    verdict = verify_tag(git(repo, "cat-file", "tag", "v0").stdout, signers_of(repo))
    assert not verdict.ok and verdict.reason == "the tag is not signed"
    with pytest.raises(SignatureError, match="unknown object format 'md5'"):
        split_commit(raw, "md5")
