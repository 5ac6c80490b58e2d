"""The policy chain from a trust root: a change counts only if `threshold` admins of the policy
before it signed it (TUF-style rotation); a rejected change never takes effect."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from uniflow import PolicyError
from uniflow._authority.rotation import PolicyChain, PolicyRevision, TrustRoot, verify_chain

T0 = datetime(2026, 12, 1, tzinfo=UTC)


def policy(admins: list[str], threshold: int = 1, releasers: list[str] | None = None) -> bytes:
    releasers = releasers if releasers is not None else admins[:1]
    return (
        f"[admins]\nprincipals = {json.dumps(admins)}\nthreshold = {threshold}\n"
        f"[groups]\nreleasers = {json.dumps(releasers)}\n"
        '[stages.production]\nfrom = ["staging"]\npromoters = ["releasers"]\nrequire_signed = true\n'
    ).encode()


KEYS = b"alice@example.com ssh-ed25519 KEY-ALICE\nbob@example.com ssh-ed25519 KEY-BOB\n"


def sha(n: int) -> str:
    """A commit id whose first 12 digits tell revisions apart."""
    return f"{n:02x}" * 20


def rev(n: int, body: bytes | None, *signers: str, keys: bytes | None = KEYS) -> PolicyRevision:
    return PolicyRevision(sha(n), T0 + timedelta(days=n), body, keys, frozenset(signers))


def chain(*revisions: PolicyRevision, root: TrustRoot | None = None) -> PolicyChain:
    return verify_chain(list(revisions), root or TrustRoot.first_seen(revisions[0].commit))


def test_first_seen_root_then_an_admin_signed_change_takes_effect() -> None:
    c = chain(
        rev(0, policy(["alice@example.com"])),
        rev(1, policy(["alice@example.com"], 1, ["ci@x.io"]), "alice@example.com"),
    )
    assert c.in_force.commit == sha(1)
    assert c.in_force.policy.promoters("production") == {"ci@x.io"}
    assert [v.accepted for v in c.revisions] == [True, True]
    assert c.revisions[0].reason.startswith("the trust root: first seen at 000000000000")
    assert c.revisions[1].reason == "signed by alice@example.com (1 needed)"
    assert c.revisions[1].signers == ("alice@example.com",)


def test_attack_non_admin_grants_itself_rights_and_the_old_policy_stays_in_force() -> None:
    grab = policy(["alice@example.com"], 1, ["mallory@example.com"])
    c = chain(rev(0, policy(["alice@example.com"])), rev(1, grab, "mallory@example.com"))
    assert c.in_force.commit == sha(0)
    assert c.in_force.policy.promoters("production") == {"alice@example.com"}
    verdict = c.revisions[1]
    assert not verdict.accepted and verdict.signers == ()
    assert verdict.reason == (
        "signed by no admin of the policy in force (mallory@example.com is not an admin); "
        "a change needs 1 of alice@example.com"
    )
    assert c.rejected() == (verdict,)


def test_attack_non_admin_makes_itself_admin_and_then_signs_more_changes() -> None:
    # the grab names mallory admin; since it never took effect, her next change is judged by alice's policy
    grab = policy(["mallory@example.com"], 1, ["mallory@example.com"])
    c = chain(
        rev(0, policy(["alice@example.com"])),
        rev(1, grab, "mallory@example.com"),
        rev(2, grab + b"\n", "mallory@example.com"),
    )
    assert c.in_force.commit == sha(0) and [v.accepted for v in c.revisions] == [True, False, False]


def test_a_later_commit_that_keeps_a_rejected_change_is_rejected_until_it_is_reverted() -> None:
    base, grab = policy(["alice@example.com"]), policy(["alice@example.com"], 1, ["mallory@example.com"])
    c = chain(rev(0, base), rev(1, grab, "mallory@example.com"), rev(2, grab), rev(3, base))
    assert [v.accepted for v in c.revisions] == [True, False, False, True]
    assert c.revisions[3].reason == "unchanged"
    assert len(c.history) == 1  # an unchanged revision adds nothing to the history


def test_attack_threshold_two_with_one_admin_signature_is_rejected() -> None:
    two = policy(["alice@example.com", "bob@example.com"], 2)
    change = policy(["alice@example.com", "bob@example.com"], 2, ["bob@example.com"])
    c = chain(rev(0, two), rev(1, change, "alice@example.com"))
    assert not c.revisions[1].accepted
    assert c.revisions[1].reason == (
        "signed by 1 admin of the policy in force (alice@example.com); "
        "a change needs 2 of alice@example.com, bob@example.com"
    )
    c = chain(rev(0, two), rev(1, change, "alice@example.com", "bob@example.com"))
    assert c.revisions[1].accepted and c.in_force.commit == sha(1)


def test_raising_the_threshold_binds_the_next_change() -> None:
    one = policy(["alice@example.com", "bob@example.com"], 1)
    two = policy(["alice@example.com", "bob@example.com"], 2)
    c = chain(rev(0, one), rev(1, two, "alice@example.com"), rev(2, one, "alice@example.com"))
    assert [v.accepted for v in c.revisions] == [True, True, False]
    assert c.in_force.policy.admins.threshold == 2


def test_rotation_hands_over_to_new_admins_and_the_old_one_loses_its_rights() -> None:
    c = chain(
        rev(0, policy(["alice@example.com"])),
        rev(1, policy(["bob@example.com"]), "alice@example.com"),  # alice hands over to bob
        rev(2, policy(["alice@example.com"]), "alice@example.com"),  # and cannot take it back
        rev(3, policy(["bob@example.com"], 1, ["ci@x.io"]), "bob@example.com"),
    )
    assert [v.accepted for v in c.revisions] == [True, True, False, True]
    assert c.in_force.policy.admins.principals == ("bob@example.com",)


def test_attack_allowed_signers_change_by_a_non_admin_is_rejected() -> None:
    base = policy(["alice@example.com"])
    more_keys = KEYS + b"mallory@example.com ssh-ed25519 KEY-MALLORY\n"
    c = chain(rev(0, base), rev(1, base, "mallory@example.com", keys=more_keys))
    assert not c.revisions[1].accepted and c.in_force.allowed_signers == KEYS
    c = chain(rev(0, base), rev(1, base, "alice@example.com", keys=more_keys))
    assert c.revisions[1].accepted and c.in_force.allowed_signers == more_keys


def _resolver(revision: PolicyRevision, allowed_signers: bytes) -> frozenset[str]:
    """A stand-in for SSH signature verification: ``signers`` holds the keys that signed the
    commit, and a key counts as the principals that ``allowed_signers`` gives it."""
    lines = [line.split() for line in allowed_signers.decode().splitlines() if line.strip()]
    return frozenset(principal for principal, _, key in lines if key in revision.signers)


def test_attack_commit_adding_its_own_key_for_an_admin_name_proves_nothing() -> None:
    # mallory adds her key under alice's name and signs with it: the keys in force before the
    # commit are what verifies it, so her signature is no admin's
    forged_keys = KEYS + b"alice@example.com ssh-ed25519 KEY-MALLORY\n"
    grab = policy(["alice@example.com"], 1, ["mallory@example.com"])
    revisions = [rev(0, policy(["alice@example.com"])), rev(1, grab, "KEY-MALLORY", keys=forged_keys)]
    c = verify_chain(revisions, TrustRoot.first_seen(revisions[0].commit), resolve=_resolver)
    assert not c.revisions[1].accepted and c.revisions[1].reason.startswith("signed by no admin")
    honest = rev(1, grab, "KEY-ALICE", keys=forged_keys)
    c = verify_chain([revisions[0], honest], TrustRoot.first_seen(revisions[0].commit), resolve=_resolver)
    assert c.revisions[1].accepted and c.revisions[1].signers == ("alice@example.com",)


def test_removing_the_policy_or_breaking_it_never_takes_effect() -> None:
    base = policy(["alice@example.com"])
    c = chain(
        rev(0, base),
        rev(1, None, "alice@example.com"),
        rev(2, b"[admins]\nthreshold = 1\n", "alice@example.com"),
    )
    assert [v.accepted for v in c.revisions] == [True, False, False]
    assert "removing it does not take effect" in c.revisions[1].reason
    assert c.revisions[2].reason.startswith(
        "invalid: .uniflow/policy.toml at 020202020202: admins.principals"
    )
    assert c.in_force.commit == sha(0)


def test_first_seen_root_must_still_be_in_the_history() -> None:
    revisions = [
        rev(0, policy(["alice@example.com"])),
        rev(1, policy(["bob@example.com"]), "alice@example.com"),
    ]
    with pytest.raises(PolicyError, match="is not in the policy history: it was rewritten"):
        verify_chain(revisions, TrustRoot.first_seen("f" * 40))
    c = verify_chain(revisions, TrustRoot.first_seen(revisions[1].commit))  # a clone that first saw rev 1
    assert [v.reason for v in c.revisions][0] == "before the trust root"
    assert c.in_force.commit == revisions[1].commit
    with pytest.raises(PolicyError, match="admins.principals"):
        chain(rev(0, b"[admins]\n"))  # the first-seen policy itself is invalid


def test_pinned_root_anchors_at_the_first_revision_its_admins_signed() -> None:
    rival = rev(0, policy(["mallory@example.com"]), "mallory@example.com")  # a rival first policy
    real = rev(1, policy(["alice@example.com"]), "alice@example.com")
    later = rev(2, policy(["alice@example.com"], 1, ["ci@x.io"]), "alice@example.com")
    root = TrustRoot.pinned({"alice@example.com"}, KEYS, source="trust-root.allowed_signers")
    c = verify_chain([rival, real, later], root)
    assert [v.accepted for v in c.revisions] == [False, True, True]
    assert c.revisions[0].reason == (
        "signed by no admin of the trust root (mallory@example.com is not an admin); "
        "a change needs 1 of alice@example.com"
    )
    assert c.in_force.commit == later.commit


def test_pinned_root_whose_admins_signed_nothing_is_an_error() -> None:
    root = TrustRoot.pinned({"zed@example.com"}, b"", source="deploy/admins")
    with pytest.raises(
        PolicyError, match=r"no policy revision is signed by 1 of the trust root's admins \(zed@"
    ):
        verify_chain([rev(0, policy(["alice@example.com"]), "alice@example.com")], root)


def test_pinned_root_input_is_validated() -> None:
    with pytest.raises(PolicyError, match="at least one valid admin"):
        TrustRoot.pinned(set(), b"")
    with pytest.raises(PolicyError, match="threshold must be from 1 to 1"):
        TrustRoot.pinned({"alice@example.com"}, b"", threshold=2)
    with pytest.raises(PolicyError, match="commit id"):
        TrustRoot.first_seen("")


def test_pinned_resolver_gets_the_pinned_keys() -> None:
    seen: list[bytes] = []

    def resolve(revision: PolicyRevision, allowed_signers: bytes) -> frozenset[str]:
        seen.append(allowed_signers)
        return _resolver(revision, allowed_signers)

    pinned = b"alice@example.com ssh-ed25519 KEY-ALICE\n"
    root = TrustRoot.pinned({"alice@example.com"}, pinned)
    revisions = [
        rev(0, policy(["alice@example.com"]), "KEY-ALICE"),
        rev(1, policy(["bob@example.com"]), "KEY-ALICE"),
    ]
    c = verify_chain(revisions, root, resolve=resolve)
    assert [v.accepted for v in c.revisions] == [True, True]
    assert seen == [pinned, KEYS]  # rev 1 is checked with the keys rev 0 put in force


def test_policy_in_force_at_a_time() -> None:
    c = chain(rev(0, policy(["alice@example.com"])), rev(2, policy(["bob@example.com"]), "alice@example.com"))
    assert c.at(T0 - timedelta(seconds=1)) is None
    assert c.at(T0 + timedelta(days=1)) == c.history[0]
    assert c.at(T0 + timedelta(days=2)) == c.history[1]


def test_describe_and_to_dict_for_policy_check() -> None:
    c = chain(
        rev(0, policy(["alice@example.com"])), rev(1, policy(["bob@example.com"]), "mallory@example.com")
    )
    text = c.describe()
    assert text.splitlines()[0] == "trust root: first seen at 000000000000 (trust on first use)"
    assert "policy in force: 000000000000 of 2026-12-01T00:00:00+00:00" in text
    assert "  admins: alice@example.com (1 of 1 sign a change)" in text
    assert "  010101010101 REJECTED: signed by no admin" in text
    d = c.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["trust_root"]["kind"] == "first-seen" and d["in_force"]["commit"] == sha(0)
    assert [r["accepted"] for r in d["revisions"]] == [True, False]
    pinned = verify_chain(
        [rev(0, policy(["alice@example.com"]), "alice@example.com")],
        TrustRoot.pinned({"alice@example.com"}, KEYS, source="admins.txt"),
    )
    assert (
        pinned.describe().splitlines()[0] == "trust root: admins.txt (admins alice@example.com; 1 must sign)"
    )
    assert pinned.to_dict()["trust_root"] == {
        "kind": "pinned",
        "admins": ["alice@example.com"],
        "threshold": 1,
        "source": "admins.txt",
    }


def test_principals_without_a_key_are_named() -> None:
    c = chain(rev(0, policy(["alice@example.com", "bob@example.com"], 1, ["ci@x.io"])))
    assert c.in_force.policy.principals() == {"alice@example.com", "bob@example.com", "ci@x.io"}
    keyed = {"alice@example.com", "bob@example.com"}  # the principals of the allowed signers
    assert c.keyless(keyed) == ("ci@x.io",)
    assert "  no key in allowed_signers: ci@x.io" in c.describe(keyed)
    assert "no key" not in c.describe()
    assert c.to_dict(keyed)["keyless"] == ["ci@x.io"] and "keyless" not in c.to_dict()


def test_an_empty_history_has_no_policy_in_force() -> None:
    with pytest.raises(PolicyError, match="not in the policy history"):
        verify_chain([], TrustRoot.first_seen("a" * 40))
    with pytest.raises(PolicyError, match="no policy revision is signed"):
        verify_chain([], TrustRoot.pinned({"alice@example.com"}, KEYS))
