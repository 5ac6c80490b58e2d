"""``uniflow policy init`` and ``uniflow policy check``: the policy files and the policy in force.

:func:`policy_init` writes ``.uniflow/policy.toml`` and ``.uniflow/allowed_signers`` into the
work tree for the user to commit (signed); :func:`policy_check` verifies the chain of policy
revisions on the default branch (:mod:`uniflow._records.policyfiles`) from a trust root,
pinned (``--trust-root FILE``) or first seen (recorded locally on the first check);
:func:`policy_in_force` is what promote enforcement asks; :func:`signing_principals` maps
the signing key Git's settings name to its principals in the allowed signers in force.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._authority.allowed_signers import MAX_ALLOWED_SIGNERS, AllowedSigners
from .._authority.policy import parse_policy, render_init
from .._authority.rotation import InForce, PolicyChain, PolicyRevision, TrustRoot, verify_chain
from .._authority.sshsig import GIT_NAMESPACE
from .._errors import NotFoundError, PolicyError, SignatureError, SigningError, UsageError
from .._records.policyfiles import (
    POLICY_PATH,
    SIGNERS_PATH,
    PolicyHistory,
    read_policy_history,
    read_trust_root,
    record_trust_root,
    signer_resolver,
    trust_root_path,
)

if TYPE_CHECKING:
    from .._repo import Repository

__all__ = [
    "PolicyInit",
    "keyed_principals",
    "load_trust_root",
    "policy_check",
    "policy_in_force",
    "policy_init",
    "signing_principals",
    "undeclared_stages",
]

_MAX_KEY_FILE = 64 * 1024
_UNSHALLOW = "git fetch --unshallow"


@dataclass(frozen=True)
class PolicyInit:
    """What :func:`policy_init` wrote: the two files, and where ``admin``'s key came from
    (``--key``, Git's ``user.signingKey``, or None: no key line yet)."""

    policy: Path
    allowed_signers: Path
    admin: str
    key_source: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": str(self.policy),
            "allowed_signers": str(self.allowed_signers),
            "admin": self.admin,
            "key_source": self.key_source,
        }


# ---------------------------------------------------------------------- init
def _key_text(key: str) -> str:
    """An OpenSSH public key line: ``key`` itself, or the content of the file it names."""
    text = key.strip()
    if text.startswith(("ssh-", "ecdsa-", "sk-")):
        return text
    path = Path(text).expanduser()
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except OSError as exc:
        raise UsageError(
            f"--key {key!r} is neither a public key line nor a readable file ({exc.strerror})"
        ) from None
    if len(data) > _MAX_KEY_FILE:
        raise UsageError(f"--key {key!r} is larger than {_MAX_KEY_FILE} bytes: not a public key file")
    lines = [line for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[0].strip() if lines else ""


def _configured_key(repo: Repository) -> str | None:
    """The public half of the key Git's signing settings name, when configured and known."""
    from .._authority.signing import read_signing_config, signer_from_config

    config = read_signing_config(repo.root)
    if not config.configured:
        return None
    public = signer_from_config(config).public_key
    return public.openssh() if public is not None else None


def policy_init(repo: Repository, admin: str, key: str | None = None) -> PolicyInit:
    """Write ``.uniflow/policy.toml`` (``admin`` administers it and is the only releaser)
    and ``.uniflow/allowed_signers`` (``admin``'s key: ``key``, a public key line or
    ``.pub`` file, else the key Git's signing settings name, else none yet) in the work
    tree. Refuses to overwrite either file. The user commits both, signed."""
    root = Path(repo.root)
    policy_path, signers_path = root / POLICY_PATH, root / SIGNERS_PATH
    for path in (policy_path, signers_path):
        if path.exists():
            raise UsageError(
                f"{path.relative_to(root)} already exists: edit it and commit the change signed by an admin"
            )
    source: str | None = None
    public: str | None = None
    if key is not None:
        public, source = _key_text(key), "--key"
    else:
        public = _configured_key(repo)
        source = "user.signingKey" if public is not None else None
    policy_text, signers_text = render_init(admin, public)
    policy_path.parent.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        for path, text in ((policy_path, policy_text), (signers_path, signers_text)):
            with open(path, "x", encoding="utf-8") as f:
                written.append(path)
                f.write(text)
    except FileExistsError as exc:
        for path in written:
            path.unlink(missing_ok=True)
        raise UsageError(f"{exc.filename} already exists: nothing written") from None
    return PolicyInit(policy_path, signers_path, admin, source)


# ---------------------------------------------------------------------- trust roots
def _named(signers: AllowedSigners) -> frozenset[str]:
    """The exact principals (no patterns, no exclusions) of the lines with a usable key."""
    return frozenset(
        name
        for entry in signers.entries
        if entry.key is not None
        for name in entry.principals.split(",")
        if name and not name.startswith("!") and "*" not in name and "?" not in name
    )


def load_trust_root(path: str | os.PathLike[str]) -> TrustRoot:
    """A pinned :class:`TrustRoot` from an allowed-signers file naming the admins (``--trust-root``):
    every principal of its lines is an admin, one signature of them starts the chain."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_ALLOWED_SIGNERS + 1)
    except OSError as exc:
        raise PolicyError(
            f"--trust-root: cannot read allowed signers {os.fspath(path)}: {exc.strerror or exc}"
        ) from None
    try:
        signers = AllowedSigners.parse(data, source=os.fspath(path))
    except SignatureError as exc:
        raise PolicyError(f"--trust-root: {exc}") from None
    admins = _named(signers)
    if not admins:
        raise PolicyError(f"--trust-root {os.fspath(path)}: names no admin with a usable key")
    return TrustRoot.pinned(admins, data, source=f"pinned by --trust-root {os.fspath(path)}")


def _first_valid(revisions: tuple[PolicyRevision, ...]) -> PolicyRevision | None:
    """The oldest revision with a policy that parses: what trust on first use records."""
    for revision in revisions:
        if revision.policy is None:
            continue
        try:
            parse_policy(revision.policy, POLICY_PATH)
        except PolicyError:
            continue
        return revision
    return None


def _no_policy(history: PolicyHistory) -> NotFoundError:
    return NotFoundError(
        f"no {POLICY_PATH} on {history.ref} ({history.tip[:12]}): "
        "run 'uniflow policy init --admin YOU' and commit it signed"
    )


def _first_use(repo: Repository, history: PolicyHistory) -> tuple[TrustRoot, bool]:
    """The first-seen root to record (trust on first use); refused in a shallow clone (a
    clone whose history holds no policy has nothing to verify, shallow or not)."""
    if not any(r.policy is not None for r in history.revisions):
        raise _no_policy(history)
    if history.shallow:
        raise PolicyError(
            f"this clone is shallow, so the policy chain cannot be verified from its first use: "
            f"run '{_UNSHALLOW}', or pass --trust-root FILE naming the admins"
        )
    first = _first_valid(history.revisions)
    if first is None:
        written = [r for r in history.revisions if r.policy is not None]
        if written:  # the newest one's problem, as one PolicyError
            newest = written[-1]
            parse_policy(newest.policy or b"", f"{POLICY_PATH} at {newest.commit[:12]}")
        raise _no_policy(history)
    return _first_seen(repo, first.commit, history.ref, recorded=False), True


def _first_seen(repo: Repository, commit: str, ref: str, *, recorded: bool) -> TrustRoot:
    where = trust_root_path(repo.git)
    when = "recorded in" if recorded else "recorded now in"
    source = f"first seen at {commit[:12]} on {ref}, {when} {where} (trust on first use)"
    return TrustRoot(commit=commit, source=source)


def _verify(repo: Repository, history: PolicyHistory, root: TrustRoot) -> PolicyChain:
    # stage names are checked for their syntax only: the verdicts must not depend on the
    # config.toml of whatever is checked out (see undeclared_stages)
    try:
        return verify_chain(history.revisions, root, resolve=signer_resolver(repo.git))
    except PolicyError as exc:
        if history.shallow:
            raise PolicyError(f"{exc} (this clone is shallow: run '{_UNSHALLOW}')") from None
        raise


def _recorded_root(repo: Repository, history: PolicyHistory, recorded: str) -> TrustRoot:
    """The recorded first-seen root, which the walk must have reached."""
    if history.stopped_at is None:
        if history.shallow:
            raise PolicyError(
                f"this clone is shallow and its history stops before the trust root {recorded[:12]}: "
                f"run '{_UNSHALLOW}', or pass --trust-root FILE"
            )
        raise PolicyError(
            f"the trust root {recorded[:12]} recorded in {trust_root_path(repo.git)} is not in the "
            f"first-parent history of {history.ref}: the policy history was rewritten; check it, then "
            "remove that file to trust the current policy"
        )
    return _first_seen(repo, recorded, history.ref, recorded=True)


def policy_check(
    repo: Repository, trust_root: str | os.PathLike[str] | TrustRoot | None = None
) -> PolicyChain:
    """Verify the chain of policy revisions on the default branch and return it.

    ``trust_root``: an allowed-signers file naming the admins (or a :class:`TrustRoot`);
    without it the first valid policy this clone saw is the root, recorded on the first
    check and required in every later one. A shallow clone without a pinned root, a root
    missing from the history (a rewrite) or no policy signed from the root is a
    :class:`PolicyError`; no policy at all is a :class:`NotFoundError`.
    """
    if trust_root is not None:
        root = trust_root if isinstance(trust_root, TrustRoot) else load_trust_root(trust_root)
        history = read_policy_history(repo.git)
        if not history.revisions:
            raise _no_policy(history)
        return _verify(repo, history, root)
    recorded = read_trust_root(repo.git)
    history = read_policy_history(repo.git, stop_at=recorded)
    if recorded is None:
        root, new = _first_use(repo, history)
    else:
        root, new = _recorded_root(repo, history, recorded), False
    chain = _verify(repo, history, root)
    if new and root.commit is not None:
        record_trust_root(repo.git, root.commit)
    return chain


def policy_in_force(
    repo: Repository,
    when: datetime | None = None,
    *,
    trust_root: str | os.PathLike[str] | TrustRoot | None = None,
) -> InForce | None:
    """The policy in force now (or at ``when``), verified as :func:`policy_check` does (so the
    first call in a clone records the trust root); None when the default branch has no
    policy (nothing to enforce) or none was in force yet at ``when``."""
    try:
        chain = policy_check(repo, trust_root)
    except NotFoundError:
        return None
    return chain.in_force if when is None else chain.at(when)


# ---------------------------------------------------------------------- keys and principals
def undeclared_stages(repo: Repository, in_force: InForce) -> tuple[str, ...]:
    """The stages the policy in force sets rules for that this work tree's
    ``.uniflow/config.toml`` does not declare (a typo leaves the intended stage unruled)."""
    known = repo.stages()
    return tuple(r.stage for r in in_force.policy.stages if r.stage not in known)


def keyed_principals(in_force: InForce) -> frozenset[str]:
    """The principals the allowed signers in force give a key to (exact names, no patterns)."""
    try:
        signers = AllowedSigners.parse(in_force.allowed_signers, source=SIGNERS_PATH)
    except SignatureError:
        return frozenset()
    return _named(signers)


def signing_principals(
    repo: Repository, in_force: InForce | None = None, when: datetime | None = None
) -> tuple[str, ...]:
    """The principals of the key Git's signing settings name (``gpg.format=ssh``,
    ``user.signingKey``) in the allowed signers in force (``in_force``, default: the policy
    :func:`policy_in_force` finds), valid at ``when`` (default now) for Git signatures.
    Empty when the key has no line there; a :class:`SigningError` when no key is configured
    or its public half is unknown."""
    from .._authority.signing import read_signing_config, signer_from_config

    public = signer_from_config(read_signing_config(repo.root)).public_key
    if public is None:
        raise SigningError("the signing key's public half is unknown: set user.signingKey to its .pub file")
    if in_force is None:
        in_force = policy_in_force(repo)
        if in_force is None:
            return ()
    try:
        signers = AllowedSigners.parse(in_force.allowed_signers, source=SIGNERS_PATH)
    except SignatureError as exc:
        raise PolicyError(f"the allowed signers in force ({in_force.commit[:12]}): {exc}") from None
    fields = signers.find_principals(public, GIT_NAMESPACE, when)
    names = (n for f in fields for n in f.split(",") if n and not n.startswith("!"))
    return tuple(dict.fromkeys(names))
