"""A consumer (``uniflow get URL --require-signed``, through the per-user mirror) follows a
policy change that only co-signatures make count: a ``threshold = 2`` change landed by an
unsigned, squash-like commit takes effect with two admins' co-signatures, and not with one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helpers import cli

from .conftest import Key, git
from .test_consume import MODEL, cache_dir, forge, get, one_error, out_dir, served
from .test_signed_lifecycle import ALICE, BOB, CI, MALLORY, POLICY, keys, signers_line

__all__ = ["cache_dir", "keys", "out_dir", "served"]  # fixtures shared with test_consume

TWO_ADMINS = POLICY.replace(
    'principals = ["alice@example.com"]', f'principals = ["{ALICE}", "{BOB}"]\nthreshold = 2'
)
NO_APPROVALS = TWO_ADMINS.replace('approvals = { group = "reviewers", count = 1 }\n', "")


def _sign(clone: Path, key: Key) -> None:
    git(clone, "config", "user.signingKey", str(key.path))
    cli(clone, "policy", "sign")


def _land(clone: Path, key: Key | None, message: str) -> None:
    git(clone, "add", "-A", ".uniflow")
    sign = (
        ["-c", "gpg.format=ssh", "-c", f"user.signingKey={key.path}", "commit", "-S"] if key else ["commit"]
    )
    git(clone, *sign, "-q", "-m", message)
    git(clone, "push", "-q", "origin", "main")


@pytest.fixture
def two_admins(served: dict[str, Any], keys: dict[str, Key]) -> dict[str, Any]:
    """``served``, then alice (the one admin) raises the threshold to 2 with bob as admin and
    lets every key co-sign; pushed."""
    clone = served["clone"]
    (clone / ".uniflow/policy.toml").write_text(TWO_ADMINS)
    options = 'namespaces="git,uniflow-policy"'
    lines = "".join(signers_line(who, k, options) for who, k in keys.items() if who != MALLORY)
    (clone / ".uniflow/allowed_signers").write_text(lines)
    _land(clone, keys[ALICE], "two admins")
    return served


@pytest.mark.parametrize("cosigners", [(ALICE, BOB), (ALICE,)])
def test_a_consumer_follows_a_change_that_two_cosignatures_make_count(
    two_admins: dict[str, Any], keys: dict[str, Key], out_dir: Path, cosigners: tuple[str, ...]
) -> None:
    clone, url = two_admins["clone"], two_admins["url"]
    (clone / ".uniflow/policy.toml").write_text(NO_APPROVALS)
    for who in cosigners:
        _sign(clone, keys[who])
    _land(clone, None, "drop the approvals of production (squashed by the hosting service)")
    # ci promotes v2 to production without an approval: allowed only under the new policy
    forge(two_admins["bare"], two_admins["v2"], "production", key=keys[CI])
    args = ("--stage", "production", "--require-signed", "-o", "prod")
    if len(cosigners) == 2:
        r = get(out_dir, url, *args)
        assert f"{MODEL} {two_admins['v2']}" in r.stdout
    else:
        line = one_error(get(out_dir, url, *args, code=10))
        assert "approval" in line, line
