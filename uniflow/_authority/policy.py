"""``.uniflow/policy.toml``: who administers the policy, who may move each stage, and what it needs.

:func:`parse_policy` reads the file's bytes (bounded before decoding, as anything read from Git)
into a frozen :class:`Policy`; any problem is one :class:`PolicyError` naming the file and the
key. :func:`render_policy` writes a :class:`Policy` back as TOML (``parse_policy`` of it gives
the same policy), and :func:`render_init` writes the two files ``uniflow policy init`` commits.

Example::

    [admins]                       # who may change policy.toml and allowed_signers
    principals = ["alice@example.com"]
    threshold = 1                  # signatures of admins a change needs (default 1)
    [groups]
    releasers = ["alice@example.com", "ci@example.com"]
    reviewers = ["bob@example.com", "carol@example.com"]
    [stages.production]
    from = ["staging"]                              # stage order (default: any stage)
    promoters = ["releasers"]                       # groups or principals (default: anyone)
    approvals = { group = "reviewers", count = 1 }  # distinct signers, never the promoter
    require_signed = true                           # or the registrant (default false)

A principal is the identity of a line of the allowed-signers file, written exactly (no
patterns): 1-256 of ``A-Z a-z 0-9 _ . + = % : / ~ @ -`` starting with a letter or digit. In
``promoters`` an entry with an ``@`` is a principal and any other entry names a group, which
must exist (so a misspelt group is an error, not a principal nobody holds). A stage the file
does not list has no rule.
"""

from __future__ import annotations

import functools
import json
import re
import tomllib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from .._bounded import check_cost
from .._errors import IntegrityError, PolicyError
from .._stages import valid_stage_name
from .cosign import COSIGN_NAMESPACE

__all__ = [
    "ALLOWED_SIGNERS_FILE",
    "MAX_POLICY_BYTES",
    "POLICY_FILE",
    "Admins",
    "ApprovalRule",
    "Policy",
    "StageRule",
    "parse_policy",
    "render_init",
    "render_policy",
    "valid_principal",
]

#: where the two files live, relative to the work tree (committed on the default branch)
POLICY_FILE = ".uniflow/policy.toml"
ALLOWED_SIGNERS_FILE = ".uniflow/allowed_signers"
#: the largest policy.toml read, checked before decoding (a real one is a few KiB)
MAX_POLICY_BYTES = 1 << 20

_PRINCIPAL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+=%:/~@-]{0,255}")
_GROUP_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_KEY_TYPES = ("ssh-", "ecdsa-", "sk-ssh-", "sk-ecdsa-")


def valid_principal(text: object) -> bool:
    """True for a principal the policy may name (an allowed-signers identity, no pattern)."""
    return isinstance(text, str) and _PRINCIPAL_RE.fullmatch(text) is not None


# ---------------------------------------------------------------------- the records
@dataclass(frozen=True)
class Admins:
    """Who may change the policy: ``threshold`` of ``principals`` must sign a change."""

    principals: tuple[str, ...]
    threshold: int = 1


@dataclass(frozen=True)
class ApprovalRule:
    """``count`` approvals by distinct members of ``group`` (never the promoter or registrant)."""

    group: str
    count: int


@dataclass(frozen=True)
class StageRule:
    """What moving a version into ``stage`` needs. Empty ``from_stages``: from any stage;
    empty ``promoters``: anyone may (subject to ``require_signed`` and ``approvals``)."""

    stage: str
    from_stages: tuple[str, ...] = ()
    promoters: tuple[str, ...] = ()  # group names and principals, as written
    approvals: ApprovalRule | None = None
    require_signed: bool = False


@dataclass(frozen=True)
class Policy:
    """A validated ``policy.toml``: admins, groups (name -> members) and stage rules."""

    admins: Admins
    groups: tuple[tuple[str, tuple[str, ...]], ...] = ()
    stages: tuple[StageRule, ...] = ()

    def members(self, group: str) -> tuple[str, ...]:
        """The principals of ``group`` (empty for an unknown group)."""
        return dict(self.groups).get(group, ())

    def rule(self, stage: str) -> StageRule | None:
        """The rule of ``stage``, or None when the policy sets none."""
        return self._resolved[0].get(stage)

    def promoters(self, stage: str) -> frozenset[str] | None:
        """The principals who may move a version into ``stage``; None when anyone may."""
        return self._resolved[1].get(stage)

    @functools.cached_property
    def _resolved(self) -> tuple[dict[str, StageRule], dict[str, frozenset[str]]]:
        """Each stage's rule (the first for it) and its promoters' principals, resolved once
        (a verifier asks for every event)."""
        rules: dict[str, StageRule] = {}
        for r in self.stages:
            rules.setdefault(r.stage, r)
        promoters = {}
        for stage, rule in rules.items():
            found: set[str] = set()
            for entry in rule.promoters:
                found.update((entry,) if "@" in entry else self.members(entry))
            if rule.promoters:
                promoters[stage] = frozenset(found)
        return rules, promoters

    def principals(self) -> frozenset[str]:
        """Every principal the policy names: admins, group members and direct promoters."""
        named = set(self.admins.principals)
        for _, members in self.groups:
            named.update(members)
        for r in self.stages:
            named.update(p for p in r.promoters if "@" in p)
        return frozenset(named)

    def is_admin(self, principal: str | None) -> bool:
        """True when ``principal`` is one of the admins."""
        return principal is not None and principal in self.admins.principals

    def to_dict(self) -> dict[str, Any]:
        """The policy as JSON-able data (``uniflow policy check --json``)."""
        stages: dict[str, Any] = {}
        for r in self.stages:
            approvals = {"group": r.approvals.group, "count": r.approvals.count} if r.approvals else None
            stages[r.stage] = {
                "from": list(r.from_stages),
                "promoters": list(r.promoters),
                "approvals": approvals,
                "require_signed": r.require_signed,
            }
        return {
            "admins": {"principals": list(self.admins.principals), "threshold": self.admins.threshold},
            "groups": {name: list(members) for name, members in self.groups},
            "stages": stages,
        }

    def describe(self) -> str:
        """The policy as a few lines of text, one per admin set, group and stage rule."""
        a = self.admins
        lines = [f"admins: {', '.join(a.principals)} ({a.threshold} of {len(a.principals)} sign a change)"]
        lines += [f"group {name}: {', '.join(members) or '(empty)'}" for name, members in self.groups]
        for r in self.stages:
            parts = [f"from {' or '.join(r.from_stages)}" if r.from_stages else "from any stage"]
            parts.append(f"by {', '.join(r.promoters)}" if r.promoters else "by anyone")
            if r.approvals and r.approvals.count:
                parts.append(f"{r.approvals.count} approval(s) from {r.approvals.group}")
            if r.require_signed:
                parts.append("signed")
            lines.append(f"stage {r.stage}: " + "; ".join(parts))
        return "\n".join(lines)


# ---------------------------------------------------------------------- parsing
def _fail(where: str, key: str, problem: str) -> NoReturn:
    raise PolicyError(f"{where}: {key}: {problem}")


def _table(where: str, path: str, value: object, allowed: Collection[str] | None) -> dict[str, Any]:
    """``value`` (the table at ``path``) if it is a table whose keys are all ``allowed``
    (None: any key)."""
    if not isinstance(value, dict):
        _fail(where, path, f"must be a table, not {type(value).__name__}")
    if allowed is not None and (unknown := sorted(set(value) - set(allowed))):
        _fail(where, f"{path}.{unknown[0]}", f"unknown key (expected {', '.join(allowed)})")
    return value


def _names(where: str, key: str, value: object, check: Any, what: str) -> tuple[str, ...]:
    """A list of distinct strings, each passing ``check``."""
    if not isinstance(value, list):
        _fail(where, key, f"must be a list of {what}s, not {type(value).__name__}")
    for item in value:
        if not check(item):
            _fail(where, key, f"{item!r} is not a valid {what}")
    if len(set(value)) != len(value):
        dup = next(v for v in value if value.count(v) > 1)
        _fail(where, key, f"{dup!r} is listed twice")
    return tuple(value)


def _int(where: str, key: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        _fail(where, key, f"must be an integer from {low} to {high}, not {value!r}")
    return value


def _admins(where: str, raw: Mapping[str, Any]) -> Admins:
    if "admins" not in raw:
        _fail(where, "admins", "missing: name who may change the policy ([admins] principals = [...])")
    table = _table(where, "admins", raw["admins"], ("principals", "threshold"))
    principals = _names(where, "admins.principals", table.get("principals"), valid_principal, "principal")
    if not principals:
        _fail(where, "admins.principals", "must name at least one admin")
    threshold = _int(where, "admins.threshold", table.get("threshold", 1), 1, len(principals))
    return Admins(principals, threshold)


def _groups(where: str, raw: Mapping[str, Any]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    groups = []
    for name, members in sorted(_table(where, "groups", raw.get("groups", {}), None).items()):
        if not _GROUP_RE.fullmatch(name):
            _fail(where, f"groups.{name}", "a group name is 1-64 of a-z 0-9 _ - starting with a letter")
        groups.append((name, _names(where, f"groups.{name}", members, valid_principal, "principal")))
    return tuple(groups)


def _approvals(where: str, key: str, value: object, policy: Policy) -> ApprovalRule:
    if not isinstance(value, dict):
        _fail(where, key, 'must be a table like { group = "reviewers", count = 1 }')
    value = _table(where, key, value, ("group", "count"))
    group = value.get("group")
    if not isinstance(group, str) or group not in dict(policy.groups):
        _fail(where, f"{key}.group", f"{group!r} is not a group of [groups]")
    size = len(policy.members(group))
    count = _int(where, f"{key}.count", value.get("count", 1), 0, size)
    return ApprovalRule(group, count)


def _stage_rule(where: str, stage: str, table: Mapping[str, Any], policy: Policy) -> StageRule:
    key = f"stages.{stage}"
    from_stages = _names(where, f"{key}.from", table.get("from", []), valid_stage_name, "stage name")
    if stage in from_stages:
        _fail(where, f"{key}.from", f"a stage cannot be promoted from itself ({stage!r})")
    promoters = _names(where, f"{key}.promoters", table.get("promoters", []), _promoter_shape, "promoter")
    for entry in promoters:
        if "@" not in entry and entry not in dict(policy.groups):
            _fail(where, f"{key}.promoters", f"{entry!r} is not a group of [groups] (a principal has an '@')")
    approvals = None
    if "approvals" in table:
        approvals = _approvals(where, f"{key}.approvals", table["approvals"], policy)
    signed = table.get("require_signed", False)
    if not isinstance(signed, bool):
        _fail(where, f"{key}.require_signed", f"must be true or false, not {signed!r}")
    return StageRule(stage, from_stages, promoters, approvals, signed)


def _promoter_shape(entry: object) -> bool:
    return (
        valid_principal(entry)
        if isinstance(entry, str) and "@" in entry
        else bool(isinstance(entry, str) and _GROUP_RE.fullmatch(entry))
    )


def _stages(
    where: str, raw: Mapping[str, Any], policy: Policy, known: Collection[str] | None
) -> tuple[StageRule, ...]:
    rules = []
    for stage, table in sorted(_table(where, "stages", raw.get("stages", {}), None).items()):
        if not valid_stage_name(stage) or (known is not None and stage not in known):
            _fail(
                where, f"stages.{stage}", "not a stage name (built-in, or declared in .uniflow/config.toml)"
            )
        rule = _stage_rule(where, stage, _table(where, f"stages.{stage}", table, _STAGE_KEYS), policy)
        if known is not None:
            for source in rule.from_stages:
                if source not in known:
                    _fail(where, f"stages.{stage}.from", f"{source!r} is not a declared stage")
        rules.append(rule)
    return tuple(rules)


_STAGE_KEYS = ("from", "promoters", "approvals", "require_signed")


def parse_policy(data: bytes, where: str = POLICY_FILE, *, stages: Collection[str] | None = None) -> Policy:
    """Validate the bytes of a ``policy.toml`` into a :class:`Policy`.

    ``where`` names the file in errors (e.g. ``".uniflow/policy.toml at 1a2b3c4"``); ``stages``,
    when given, is every stage the registry declares, and a rule for another stage is refused.
    The size and the decoding cost are bounded before the TOML is decoded. Every problem is one
    :class:`PolicyError` naming the file and the key.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise PolicyError(f"{where}: expected bytes, not {type(data).__name__}")
    if len(data) > MAX_POLICY_BYTES:
        raise PolicyError(f"{where}: is {len(data)} bytes, more than {MAX_POLICY_BYTES}")
    try:
        check_cost(bytes(data), where, separators=b",=\n")
        raw = tomllib.loads(bytes(data).decode("utf-8"))
    except IntegrityError as exc:
        raise PolicyError(str(exc)) from exc
    except (UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as exc:
        raise PolicyError(f"{where}: not valid TOML: {str(exc)[:200]}") from exc
    unknown = sorted(set(raw) - {"admins", "groups", "stages"})
    if unknown:
        _fail(where, unknown[0], "unknown key (expected [admins], [groups], [stages.NAME])")
    policy = Policy(_admins(where, raw), _groups(where, raw))
    return Policy(policy.admins, policy.groups, _stages(where, raw, policy, stages))


# ---------------------------------------------------------------------- writing
def _toml_list(items: Iterable[str]) -> str:
    # the names are ASCII without quotes or backslashes, so a JSON string is a TOML string
    return "[" + ", ".join(json.dumps(item) for item in items) + "]"


def _toml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def render_policy(policy: Policy) -> str:
    """``policy`` as the text of a ``policy.toml`` (parsing it gives ``policy`` back)."""
    out = [
        "[admins]  # who may change policy.toml and allowed_signers",
        f"principals = {_toml_list(policy.admins.principals)}",
        f"threshold = {policy.admins.threshold}",
        "",
        "[groups]",
        *(f"{_toml_key(name)} = {_toml_list(members)}" for name, members in policy.groups),
    ]
    for r in policy.stages:
        out += ["", f"[stages.{_toml_key(r.stage)}]"]
        if r.from_stages:
            out.append(f"from = {_toml_list(r.from_stages)}")
        if r.promoters:
            out.append(f"promoters = {_toml_list(r.promoters)}")
        if r.approvals is not None:
            out.append(f'approvals = {{ group = "{r.approvals.group}", count = {r.approvals.count} }}')
        if r.require_signed:
            out.append("require_signed = true")
    return "\n".join(out) + "\n"


def _key_line(admin: str, public_key: str) -> str:
    fields = public_key.split()
    if (
        len(fields) < 2
        or not fields[0].startswith(_KEY_TYPES)
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in public_key)
    ):
        raise PolicyError(
            f"not an SSH public key: {public_key[:60]!r} "
            "(expected one line like 'ssh-ed25519 AAAA... comment')"
        )
    # an admin signs commits and tags ("git") and co-signs policy changes (cosign's namespace)
    return f'{admin} namespaces="git,{COSIGN_NAMESPACE}" {" ".join(fields)}\n'


def render_init(admin: str, public_key: str | None = None) -> tuple[str, str]:
    """The ``(policy.toml, allowed_signers)`` texts ``uniflow policy init --admin`` writes.

    ``admin`` administers the policy and is the only releaser; production needs a signed
    promotion from staging by a releaser. ``public_key`` (an OpenSSH public key line, as in
    ``~/.ssh/id_ed25519.pub``) becomes ``admin``'s line of allowed_signers; without it the file
    only explains its format.
    """
    if not valid_principal(admin):
        raise PolicyError(
            f"invalid admin principal {admin!r}: use the identity of your signing key, e.g. an email"
        )
    policy = Policy(
        Admins((admin,), 1),
        (("releasers", (admin,)),),
        (
            StageRule("production", ("staging",), ("releasers",), None, True),
            StageRule("staging", (), ("releasers",), None, False),
        ),
    )
    header = (
        "# uniflow policy (docs/governance.md). A change to this file or to allowed_signers counts\n"
        "# only when its commit is signed by `threshold` admins of the policy before it.\n"
        '# [groups] NAME = ["principal", ...]; [stages.NAME] from, promoters, require_signed,\n'
        '# approvals = { group = "NAME", count = N } (distinct signers, never the promoter or registrant)\n'
    )
    signers = (
        "# Git's allowed-signers format (man ssh-keygen, ALLOWED SIGNERS): one key a line,\n"
        '#   PRINCIPAL namespaces="git" KEYTYPE BASE64 [COMMENT]\n'
        f'# (an admin\'s line: namespaces="git,{COSIGN_NAMESPACE}", to co-sign policy changes)\n'
        '# add valid-after="YYYYMMDD" / valid-before="YYYYMMDD" to bound a key; delete a line to revoke it.\n'
    )
    if public_key is not None:
        signers += _key_line(admin, public_key)
    return header + render_policy(policy), signers
