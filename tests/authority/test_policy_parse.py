"""``.uniflow/policy.toml``: parsed into typed records, every bad input one PolicyError naming the key."""

from __future__ import annotations

import json
import tomllib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uniflow import PolicyError
from uniflow._authority.policy import (
    MAX_POLICY_BYTES,
    Admins,
    ApprovalRule,
    Policy,
    StageRule,
    parse_policy,
    render_init,
    render_policy,
)

ISSUE_EXAMPLE = b"""
[admins]                       # who may change these two files
principals = ["alice@example.com"]
threshold = 1
[groups]
releasers = ["alice@example.com", "ci@example.com"]
reviewers = ["bob@example.com", "carol@example.com"]
[stages.production]
from = ["staging"]                              # stage order
promoters = ["releasers"]                       # who may move it
approvals = { group = "reviewers", count = 1 }  # distinct signers, never the promoter or the registrant
require_signed = true
[stages.staging]
promoters = ["releasers", "reviewers"]
"""

HEAD = '[admins]\nprincipals = ["alice@example.com"]\n[groups]\nreviewers = ["bob@example.com"]\n'


def test_the_issue_example_parses_into_typed_records() -> None:
    policy = parse_policy(ISSUE_EXAMPLE)
    assert policy.admins == Admins(("alice@example.com",), 1)
    assert policy.members("reviewers") == ("bob@example.com", "carol@example.com")
    prod = policy.rule("production")
    assert prod == StageRule(
        "production", ("staging",), ("releasers",), ApprovalRule("reviewers", 1), require_signed=True
    )
    assert policy.rule("staging") == StageRule("staging", (), ("releasers", "reviewers"))
    assert policy.rule("archived") is None  # a stage the file does not list has no rule
    assert policy.promoters("production") == {"alice@example.com", "ci@example.com"}
    assert policy.promoters("archived") is None
    assert policy.is_admin("alice@example.com") and not policy.is_admin("bob@example.com")


def test_defaults_threshold_one_and_an_open_stage() -> None:
    policy = parse_policy(b'[admins]\nprincipals = ["a@x"]\n[stages.canary]\n')
    assert policy.admins.threshold == 1
    assert policy.rule("canary") == StageRule("canary")
    assert policy.promoters("canary") is None


def test_a_principal_with_an_at_sign_is_named_directly_in_promoters() -> None:
    policy = parse_policy(
        HEAD.encode() + b'[stages.production]\npromoters = ["ci@example.com", "reviewers"]\n'
    )
    assert policy.promoters("production") == {"ci@example.com", "bob@example.com"}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "admins: missing"),
        ("[admins]\nprincipals = []\n", "admins.principals: must name at least one admin"),
        ('[admins]\nprincipals = ["a@x", "a@x"]\n', "'a@x' is listed twice"),
        (
            '[admins]\nprincipals = ["a@x"]\nthreshold = 2\n',
            "admins.threshold: must be an integer from 1 to 1",
        ),
        ('[admins]\nprincipals = ["a@x"]\nthreshold = 0\n', "admins.threshold"),
        ('[admins]\nprincipals = ["a@x"]\nthreshold = true\n', "admins.threshold"),
        ('[admins]\nprincipals = ["a@x"]\nquorum = 1\n', "admins.quorum: unknown key"),
        ('[admins]\nprincipals = ["a@x"]\n[roles]\n', "roles: unknown key"),
        ('[admins]\nprincipals = ["*@example.com"]\n', "not a valid principal"),
        ('[admins]\nprincipals = ["a b@x"]\n', "not a valid principal"),
        ('[admins]\nprincipals = "a@x"\n', "admins.principals: must be a list"),
        ("admins = 3\n", "admins: must be a table"),
        ('[admins]\nprincipals = ["a@x"]\n[groups]\nReviewers = ["b@x"]\n', "groups.Reviewers: a group name"),
        ('[admins]\nprincipals = ["a@x"]\n[groups]\nr = ["a@x,b@x"]\n', "groups.r: 'a@x,b@x' is not a valid"),
        (HEAD + "[stages.Production]\n", "stages.Production: not a stage name"),
        (
            HEAD + "[stages.production]\nfrom = ['qa!']\n",
            "stages.production.from: 'qa!' is not a valid stage",
        ),
        (HEAD + "[stages.production]\nfrom = ['production']\n", "cannot be promoted from itself"),
        (HEAD + "[stages.production]\npromoters = ['releasers']\n", "'releasers' is not a group of [groups]"),
        (HEAD + "[stages.production]\napprovals = { group = 'qa', count = 1 }\n", "'qa' is not a group"),
        (
            HEAD + "[stages.production]\napprovals = { group = 'reviewers', count = -1 }\n",
            "count: must be an",
        ),
        (
            HEAD + "[stages.production]\napprovals = { group = 'reviewers', count = 2 }\n",
            "from 0 to 1, not 2",
        ),
        (
            HEAD + "[stages.production]\napprovals = { group = 'reviewers', cnt = 1 }\n",
            "approvals.cnt: unknown",
        ),
        (HEAD + "[stages.production]\napprovals = 1\n", "approvals: must be a table"),
        (HEAD + "[stages.production]\nrequire_signed = 'yes'\n", "require_signed: must be true or false"),
        (HEAD + "[stages.production]\nrequire_sign = true\n", "stages.production.require_sign: unknown key"),
        ('stages = 1\n[admins]\nprincipals = ["a@x"]\n', "stages: must be a table"),
        ("[admins\n", "not valid TOML"),
    ],
)
def test_every_bad_policy_is_one_policy_error_naming_the_key(text: str, fragment: str) -> None:
    with pytest.raises(PolicyError) as info:
        parse_policy(text.encode(), where=".uniflow/policy.toml at abc123")
    message = str(info.value)
    assert fragment in message and "\n" not in message
    assert message.startswith(".uniflow/policy.toml at abc123")
    assert info.value.exit_code == 10


def test_declared_stages_restrict_the_rules() -> None:
    text = HEAD.encode() + b"[stages.canary]\nfrom = ['staging']\n"
    assert parse_policy(text).rule("canary") is not None  # any well-formed name without the table
    with pytest.raises(PolicyError, match="stages.canary: not a stage name"):
        parse_policy(text, stages={"development", "staging", "production", "archived"})
    with pytest.raises(PolicyError, match="'qa' is not a declared stage"):
        parse_policy(
            HEAD.encode() + b"[stages.production]\nfrom = ['qa']\n", stages={"production", "staging"}
        )


def test_size_and_decoding_cost_are_bounded_before_parsing() -> None:
    big = b"#" * (MAX_POLICY_BYTES + 1)
    with pytest.raises(PolicyError, match=f"more than {MAX_POLICY_BYTES}"):
        parse_policy(big)
    # within the size bound, but nested arrays that would cost far more memory than their bytes
    nested = b"x = " + b"[" * 200_000 + b"]" * 200_000
    with pytest.raises(PolicyError, match="memory"):
        parse_policy(nested[:MAX_POLICY_BYTES])


def test_not_utf8_and_not_bytes_are_policy_errors() -> None:
    with pytest.raises(PolicyError, match="not valid TOML"):
        parse_policy(b"\xff\xfe[admins]")
    with pytest.raises(PolicyError, match="expected bytes"):
        parse_policy("[admins]")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- init, render, describe
def test_init_renders_a_valid_policy_and_an_allowed_signers_line() -> None:
    policy_text, signers = render_init(
        "alice@example.com", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB alice@laptop"
    )
    policy = parse_policy(policy_text.encode())
    assert policy.admins == Admins(("alice@example.com",), 1)
    assert policy.promoters("production") == {"alice@example.com"}
    assert policy.rule("production") == StageRule("production", ("staging",), ("releasers",), None, True)
    lines = [line for line in signers.splitlines() if line and not line.startswith("#")]
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB alice@laptop"
    assert lines == [f'alice@example.com namespaces="git,uniflow-policy" {key}']


def test_init_without_a_key_writes_only_the_format_and_refuses_bad_input() -> None:
    _, signers = render_init("alice@example.com")
    assert all(line.startswith("#") for line in signers.splitlines())
    with pytest.raises(PolicyError, match="invalid admin principal"):
        render_init("alice example")
    with pytest.raises(PolicyError, match="not an SSH public key"):
        render_init("alice@example.com", "AAAAC3Nza")
    with pytest.raises(PolicyError, match="not an SSH public key"):
        render_init("alice@example.com", "ssh-ed25519 AAAA\nmallory@x ssh-ed25519 BBBB")


def test_describe_and_to_dict() -> None:
    policy = parse_policy(ISSUE_EXAMPLE)
    text = policy.describe()
    assert "admins: alice@example.com (1 of 1 sign a change)" in text
    assert "stage production: from staging; by releasers; 1 approval(s) from reviewers; signed" in text
    d = policy.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert d["stages"]["production"]["approvals"] == {"group": "reviewers", "count": 1}
    assert d["groups"]["releasers"] == ["alice@example.com", "ci@example.com"]


def test_render_round_trips_the_issue_example() -> None:
    policy = parse_policy(ISSUE_EXAMPLE)
    assert parse_policy(render_policy(policy).encode()) == policy


# ---------------------------------------------------------------------- properties
_principal = st.from_regex(r"[a-z0-9][a-z0-9._+-]{0,10}@[a-z]{1,8}\.com", fullmatch=True)
_group = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)
_stage = st.sampled_from(["development", "staging", "production", "archived", "canary", "qa-2"])


@st.composite
def _policies(draw: st.DrawFn) -> Policy:
    admins = draw(st.lists(_principal, min_size=1, max_size=4, unique=True))
    groups = draw(st.dictionaries(_group, st.lists(_principal, max_size=4, unique=True), max_size=3))
    stages = []
    for stage in sorted(draw(st.sets(_stage, max_size=4))):
        sources = draw(st.lists(_stage.filter(lambda s, stage=stage: s != stage), max_size=2, unique=True))
        promoters = (
            draw(st.lists(st.sampled_from(sorted(groups)) | _principal, max_size=3, unique=True))
            if groups
            else []
        )
        approvals = None
        if groups and draw(st.booleans()):
            group = draw(st.sampled_from(sorted(groups)))
            approvals = ApprovalRule(group, draw(st.integers(0, len(groups[group]))))
        stages.append(StageRule(stage, tuple(sources), tuple(promoters), approvals, draw(st.booleans())))
    threshold = draw(st.integers(1, len(admins)))
    return Policy(
        Admins(tuple(admins), threshold),
        tuple(sorted((k, tuple(v)) for k, v in groups.items())),
        tuple(stages),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_policies())
def test_render_then_parse_gives_the_same_policy(policy: Policy) -> None:
    assert parse_policy(render_policy(policy).encode()) == policy


_toml_values = st.recursive(
    st.none().map(lambda _: 1) | st.booleans() | st.integers(-3, 3) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)


def _string(value: int | str) -> str:
    # a JSON string is a TOML basic string once DEL is escaped too (astral characters stay raw)
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def _dump(value: object) -> str:
    """A TOML value (inline tables, arrays, JSON-escaped strings) for the fuzz test."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, str)):
        return _string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_dump(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{_string(k)} = {_dump(v)}" for k, v in value.items()) + "}"


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["admins", "groups", "stages", "other"]),
        st.dictionaries(
            st.sampled_from(["principals", "threshold", "production", "reviewers", "x"]), _toml_values
        ),
        max_size=3,
    )
)
def test_any_document_gives_a_policy_or_one_policy_error(raw: dict[str, dict[str, object]]) -> None:
    text = "\n".join(f"{key} = {_dump(table)}" for key, table in raw.items())
    tomllib.loads(text)  # the generator writes valid TOML
    try:
        policy = parse_policy(text.encode())
    except PolicyError as exc:
        assert "\n" not in str(exc) and str(exc).startswith(".uniflow/policy.toml: ")
    else:
        assert 1 <= policy.admins.threshold <= len(policy.admins.principals)
        assert parse_policy(render_policy(policy).encode()) == policy


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_give_a_policy_or_one_policy_error(data: bytes) -> None:
    try:
        parse_policy(data)
    except PolicyError as exc:
        assert "\n" not in str(exc)
