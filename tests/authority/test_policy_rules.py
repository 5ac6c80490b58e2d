"""A lifecycle event against the policy in force: each rule, and each attack decidable here.

The signer of an event is what upstream verification found: ``None`` for an unsigned event and
for one signed by a key that is not an allowed signer (unknown, revoked, expired).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from uniflow import PolicyError, UsageError
from uniflow._authority.policy import parse_policy
from uniflow._authority.rules import Approval, LifecycleEvent, evaluate, index_approvals

POLICY = parse_policy(
    b"""
[admins]
principals = ["alice@example.com"]
[groups]
releasers = ["alice@example.com", "ci@example.com"]
reviewers = ["bob@example.com", "carol@example.com", "ci@example.com"]
[stages.production]
from = ["staging"]
promoters = ["releasers"]
approvals = { group = "reviewers", count = 1 }
require_signed = true
[stages.staging]
promoters = ["releasers", "reviewers"]
[stages.canary]
require_signed = true
[stages.qa]
approvals = { group = "reviewers", count = 2 }
"""
)
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
REGISTRANT = "dave@example.com"


def promote(
    version: str = "v1.0.0", *, to: str = "production", frm: str = "staging", **kw: object
) -> LifecycleEvent:
    fields: dict[str, object] = {
        "action": "promote",
        "model": "clf",
        "version": version,
        "from_stage": frm,
        "to_stage": to,
        "signer": "ci@example.com",
        "signed_at": T0,
    }
    fields.update(kw)
    return LifecycleEvent(**fields)  # type: ignore[arg-type]


def approval(
    signer: str | None, version: str = "v1.0.0", stage: str = "production", **kw: object
) -> Approval:
    fields: dict[str, object] = {
        "model": "clf",
        "version": version,
        "stage": stage,
        "signer": signer,
        "signed_at": T0 - timedelta(hours=1),
    }
    fields.update(kw)
    return Approval(**fields)  # type: ignore[arg-type]


def test_a_promotion_that_meets_every_rule_is_allowed() -> None:
    verdict = evaluate(POLICY, promote(), registrant=REGISTRANT, approvals=[approval("bob@example.com")])
    assert verdict.allowed and verdict.reasons == ()
    assert verdict.approvers == ("bob@example.com",)
    assert verdict.reason == "allowed"
    verdict.check()  # does not raise


def test_a_stage_without_a_rule_allows_anything_even_unsigned() -> None:
    verdict = evaluate(POLICY, promote(to="archived", signer=None, action="archive"), registrant=None)
    assert verdict.allowed and "no rule" in verdict.reason


# ---------------------------------------------------------------------- attacks of the issue
def test_attack_promotion_signed_by_an_unknown_key_is_refused() -> None:
    # upstream found no allowed signer for the key: the event's signer is None
    verdict = evaluate(
        POLICY, promote(signer=None), registrant=REGISTRANT, approvals=[approval("bob@example.com")]
    )
    assert not verdict.allowed
    assert verdict.reason == (
        "the promote of v1.0.0 to production is unsigned or its key is not an allowed signer; "
        "production requires signed events"
    )
    with pytest.raises(PolicyError, match="unsigned") as info:
        verdict.check()
    assert info.value.exit_code == 10


def test_attack_unsigned_promotion_where_require_signed_is_refused() -> None:
    # canary has no promoters: only require_signed stands between it and anyone
    verdict = evaluate(POLICY, promote(to="canary", signer=None), registrant=REGISTRANT)
    assert not verdict.allowed and "canary requires signed events" in verdict.reason
    assert evaluate(POLICY, promote(to="canary", signer="zed@example.com"), registrant=REGISTRANT).allowed


def test_require_signed_also_needs_the_version_tag_signed() -> None:
    # a signed promotion of a version whose tag nobody (known) signed: the bytes are not bound
    event = promote(to="canary", signer="zed@example.com")
    verdict = evaluate(POLICY, event, registrant=None)
    assert verdict.reason == (
        "the tag of clf v1.0.0 is unsigned or its key is not an allowed signer; "
        "canary requires signed versions"
    )
    # a stage without require_signed does not ask for it
    assert evaluate(POLICY, promote(to="staging", frm="development"), registrant=None).allowed


def test_unsigned_promotion_to_a_stage_with_promoters_is_refused() -> None:
    verdict = evaluate(POLICY, promote(to="staging", frm="development", signer=None), registrant=REGISTRANT)
    assert not verdict.allowed and "staging names its promoters" in verdict.reason


def test_attack_signer_without_rights_is_refused() -> None:
    event = promote(signer="mallory@example.com")
    verdict = evaluate(POLICY, event, registrant=REGISTRANT, approvals=[approval("bob@example.com")])
    assert verdict.reason == "mallory@example.com is not a promoter of production (promoters: releasers)"
    # a reviewer may move staging, not production
    assert not evaluate(POLICY, promote(signer="bob@example.com"), registrant=REGISTRANT).allowed
    assert evaluate(
        POLICY, promote(to="staging", frm="development", signer="bob@example.com"), registrant=None
    ).allowed


def test_attack_promotion_without_the_required_approvals_is_refused() -> None:
    verdict = evaluate(POLICY, promote(), registrant=REGISTRANT)
    assert verdict.reason == "production needs 1 approval of clf v1.0.0 from group reviewers; has 0"
    two = evaluate(
        POLICY,
        promote(to="qa", frm="staging"),
        registrant=REGISTRANT,
        approvals=[approval("bob@example.com", stage="qa")],
    )
    assert two.reason == "qa needs 2 approvals of clf v1.0.0 from group reviewers; has 1"


def test_attack_approval_by_the_promoter_does_not_count() -> None:
    # ci@example.com is both a releaser and a reviewer: it cannot approve its own promotion
    verdict = evaluate(POLICY, promote(), registrant=REGISTRANT, approvals=[approval("ci@example.com")])
    assert not verdict.allowed
    assert verdict.reason.endswith("has 0 (not counted: ci@example.com is the promoter)")


def test_attack_approval_by_the_registrant_does_not_count() -> None:
    verdict = evaluate(
        POLICY, promote(), registrant="bob@example.com", approvals=[approval("bob@example.com")]
    )
    assert not verdict.allowed
    assert "not counted: bob@example.com registered v1.0.0" in verdict.reason


def test_attack_approval_replayed_for_another_version_or_stage_does_not_count() -> None:
    replays = [approval("bob@example.com", version="v0.9.0"), approval("carol@example.com", stage="staging")]
    verdict = evaluate(POLICY, promote(), registrant=REGISTRANT, approvals=replays)
    assert not verdict.allowed
    assert "bob@example.com approved clf v0.9.0 for production" in verdict.reason
    assert "carol@example.com approved clf v1.0.0 for staging" in verdict.reason
    other_model = replace(approval("bob@example.com"), model="other")
    assert not evaluate(POLICY, promote(), registrant=REGISTRANT, approvals=[other_model]).allowed


def test_attack_skipped_stage_is_refused() -> None:
    event = promote(frm="development")
    verdict = evaluate(POLICY, event, registrant=REGISTRANT, approvals=[approval("bob@example.com")])
    assert verdict.reason == "production may only be promoted from staging; v1.0.0 is in development"


# ---------------------------------------------------------------------- the approval rules
def test_approvals_must_come_from_distinct_members_of_the_group() -> None:
    same_twice = [approval("bob@example.com", stage="qa"), approval("bob@example.com", stage="qa")]
    verdict = evaluate(POLICY, promote(to="qa"), registrant=REGISTRANT, approvals=same_twice)
    assert not verdict.allowed and verdict.reason.endswith("has 1")
    outsider = [approval("bob@example.com", stage="qa"), approval("zed@example.com", stage="qa")]
    verdict = evaluate(POLICY, promote(to="qa"), registrant=REGISTRANT, approvals=outsider)
    assert "zed@example.com is not in group reviewers" in verdict.reason
    both = [approval("bob@example.com", stage="qa"), approval("carol@example.com", stage="qa")]
    verdict = evaluate(POLICY, promote(to="qa"), registrant=REGISTRANT, approvals=both)
    assert verdict.allowed and verdict.approvers == ("bob@example.com", "carol@example.com")


def test_unsigned_and_later_approvals_do_not_count() -> None:
    late = approval("bob@example.com", signed_at=T0 + timedelta(seconds=1))
    verdict = evaluate(POLICY, promote(), registrant=REGISTRANT, approvals=[approval(None), late])
    assert not verdict.allowed
    assert (
        "an unsigned approval" in verdict.reason
        and "bob@example.com approved after the promote" in verdict.reason
    )
    # made at the same second as the promotion: counts
    assert evaluate(
        POLICY, promote(), registrant=REGISTRANT, approvals=[approval("bob@example.com", signed_at=T0)]
    ).allowed


def test_a_refusal_names_at_most_three_discounted_approvals() -> None:
    noise = [approval("bob@example.com", version=f"v0.{i}.0") for i in range(6)]
    reason = evaluate(POLICY, promote(), registrant=REGISTRANT, approvals=noise).reason
    assert reason.count("approved clf") == 3 and reason.endswith(", and 3 more)")


def test_every_failed_rule_is_named_in_one_line() -> None:
    verdict = evaluate(
        POLICY, promote(frm="development", signer="mallory@example.com"), registrant=REGISTRANT
    )
    assert len(verdict.reasons) == 3 and "\n" not in verdict.reason
    assert (
        verdict.reason.split("; ")[0]
        == "mallory@example.com is not a promoter of production (promoters: releasers)"
    )
    assert verdict.to_dict()["allowed"] is False and verdict.to_dict()["reasons"] == list(verdict.reasons)


# ---------------------------------------------------------------------- rollback, archive, inputs
def test_rollback_restores_only_an_earlier_holder() -> None:
    back = promote("v0.9.0", frm="archived", action="rollback", past_holder=True)
    ok = evaluate(
        POLICY, back, registrant=REGISTRANT, approvals=[approval("bob@example.com", version="v0.9.0")]
    )
    assert ok.allowed  # archived is not staging, but the version held production before
    forged = replace(back, past_holder=False)
    verdict = evaluate(
        POLICY, forged, registrant=REGISTRANT, approvals=[approval("bob@example.com", version="v0.9.0")]
    )
    assert verdict.reason == "v0.9.0 never held production; a rollback may only restore an earlier holder"
    # a rollback obeys the signer and approval rules like a promotion
    assert not evaluate(POLICY, replace(back, signer="mallory@example.com"), registrant=REGISTRANT).allowed


def test_archive_is_governed_when_the_archived_stage_has_a_rule() -> None:
    policy = parse_policy(
        b'[admins]\nprincipals = ["alice@example.com"]\n'
        b'[stages.archived]\npromoters = ["alice@example.com"]\n'
    )
    event = promote(action="archive", to="archived", frm="production", signer="ci@example.com")
    assert evaluate(policy, event, registrant=None).reason == (
        "ci@example.com is not a promoter of archived (promoters: alice@example.com)"
    )
    assert evaluate(policy, replace(event, signer="alice@example.com"), registrant=None).allowed


def test_bad_event_records_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="not 'register'"):
        promote(action="register")
    with pytest.raises(UsageError, match="timezone-aware"):
        promote(signed_at=datetime(2026, 1, 1))
    with pytest.raises(UsageError, match="timezone-aware"):
        approval("bob@example.com", signed_at=datetime(2026, 1, 1))


def test_an_index_gives_each_event_only_its_own_approvals() -> None:
    seen = [
        approval("bob@example.com"),
        approval("carol@example.com", version="v0.9.0"),
        approval("bob@example.com"),
    ]
    index = index_approvals(seen)
    assert index[("clf", "v1.0.0", "production")] == (seen[0], seen[2])
    assert index[("clf", "v0.9.0", "production")] == (seen[1],)
    event = promote()
    own = index.get((event.model, event.version, event.to_stage), ())
    assert evaluate(POLICY, event, registrant=REGISTRANT, approvals=own).approvers == ("bob@example.com",)
