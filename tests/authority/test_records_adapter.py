"""The dulwich adapter: a commit and a tag signed as dulwich objects keep their bytes through
dulwich and verify with ``git verify-commit``/``verify-tag``."""

from __future__ import annotations

from pathlib import Path

from dulwich.objects import Commit, Tag
from dulwich.repo import Repo

from uniflow._authority.allowed_signers import AllowedSigners
from uniflow._authority.signing import load_signer
from uniflow._records.signed import (
    sign_commit_object,
    sign_tag_object,
    verify_commit_object,
    verify_tag_object,
)

from .conftest import Key, git, signers_of


def test_dulwich_objects_signed_and_verified(repo: Path, key: Key) -> None:
    git(repo, "tag", "-a", "v1", "-m", "one")
    signer = load_signer(str(key.path))
    with Repo(str(repo)) as r:
        commit = r[r.refs[b"HEAD"]]
        tag = r[r.refs[b"refs/tags/v1"]]
        assert isinstance(commit, Commit) and isinstance(tag, Tag)
        signed_commit = sign_commit_object(commit, signer)
        signed_tag = sign_tag_object(tag, signer)
        assert isinstance(signed_commit, Commit) and signed_commit.gpgsig is not None
        r.object_store.add_object(signed_commit)
        r.object_store.add_object(signed_tag)
        r.refs[b"refs/heads/signed"] = signed_commit.id
        r.refs[b"refs/tags/signed"] = signed_tag.id
    # dulwich stored exactly the bytes that were signed
    assert git(repo, "cat-file", "commit", "refs/heads/signed").stdout == signed_commit.as_raw_string()
    assert git(repo, "verify-commit", "refs/heads/signed", check=False).returncode == 0
    assert git(repo, "verify-tag", "refs/tags/signed", check=False).returncode == 0
    signers: AllowedSigners = signers_of(repo)
    assert verify_commit_object(signed_commit, signers).ok and verify_tag_object(signed_tag, signers).ok
    assert not verify_commit_object(commit, signers).ok
