"""Who a verified key is, event by event (``_ops.authority.Signers``): the answer for a key
is kept per policy revision only when none of its allowed-signers lines has a validity
window; a windowed key is judged at each signature's own time, whatever was asked before."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from uniflow._authority.policy import parse_policy
from uniflow._authority.rotation import InForce, PolicyChain, TrustRoot
from uniflow._ops.authority import Signers

from .conftest import Key, make_key

POLICY = b'[admins]\nprincipals = ["ci@example.com"]\n'
START = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())
# valid-before 2026-06-01: inside the window before it, refused after
BEFORE, AFTER = START + 86400, int(datetime(2026, 7, 1, tzinfo=UTC).timestamp())


def _signers(*lines: str) -> Signers:
    allowed = "".join(f"{line}\n" for line in lines).encode()
    revision = InForce("a" * 40, datetime.fromtimestamp(START, UTC), parse_policy(POLICY), POLICY, allowed)
    return Signers(PolicyChain(TrustRoot(), (revision,), ()))


def _keys(tmp_path: Path) -> tuple[Key, Key]:
    return make_key(tmp_path / "keys", "ci"), make_key(tmp_path / "keys", "old")


def test_a_key_with_a_validity_window_is_judged_at_each_time(tmp_path: Path) -> None:
    ci, old = _keys(tmp_path)
    signers = _signers(
        f'ci@example.com namespaces="git" {ci.pub_line}',
        f'old@example.com namespaces="git",valid-before="20260601Z" {old.pub_line}',
    )
    assert signers.who(old.public, "sig", BEFORE)[0] == ("old@example.com",)
    names, line = signers.who(old.public, "sig", AFTER)
    assert names == () and "after valid-before" in line
    assert signers.who(old.public, "sig", BEFORE)[0] == ("old@example.com",)  # not the answer kept for AFTER


def test_a_key_without_a_window_is_the_same_signer_at_any_time(tmp_path: Path) -> None:
    ci, old = _keys(tmp_path)
    signers = _signers(f'ci@example.com namespaces="git" {ci.pub_line}')
    first = signers.who(ci.public, "sig", BEFORE)
    assert first == signers.who(ci.public, "sig", AFTER)
    assert first[0] == ("ci@example.com",) and ci.public.fingerprint in first[1]
    names, line = signers.who(old.public, "sig", BEFORE)
    assert names == () and "is not an allowed signer" in line
    assert signers.who(None, "unsigned", BEFORE) == ((), "unsigned")
