"""``uniflow policy init``, ``check`` and ``sign``: the policy files and the policy in force.

:func:`policy_init` writes ``.uniflow/policy.toml`` and ``.uniflow/allowed_signers`` into the
work tree for the user to commit (signed); :func:`policy_check` verifies the chain of policy
revisions on the default branch (:mod:`uniflow._records.policyfiles`) from a trust root,
pinned (``--trust-root FILE``) or first seen (recorded locally on the first check);
:func:`policy_in_force` is what promote enforcement asks; :func:`signing_principals` maps
the signing key Git's settings name to its principals in the allowed signers in force;
:func:`policy_sign` co-signs the work tree's change of the policy files
(:mod:`uniflow._authority.cosign`) and writes the signature where the change commits it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._authority.allowed_signers import MAX_ALLOWED_SIGNERS, AllowedSigners
from .._authority.cosign import (
    COSIGN_NAMESPACE,
    MAX_COSIGNATURE_BYTES,
    MAX_COSIGNATURES,
    CoSignature,
    verify_cosignatures,
)
from .._authority.policy import parse_policy, render_init
from .._authority.rotation import (
    InForce,
    PolicyChain,
    PolicyRevision,
    TrustRoot,
    revision_statement,
    verify_chain,
)
from .._authority.sshsig import GIT_NAMESPACE
from .._errors import NotFoundError, PolicyError, SignatureError, SigningError, UsageError
from .._records.paths import POLICY_PATH, SIGNERS_PATH
from .._records.policyfiles import (
    MAX_POLICY_FILE,
    SIGNATURES_DIR,
    PolicyHistory,
    read_policy_history,
    read_trust_root,
    record_trust_root,
    signer_resolver,
    trust_root_path,
)
from .._storage.safefs import NotRegularFile, first_link, open_regular

if TYPE_CHECKING:
    from .._repo import Repository

__all__ = [
    "PolicyInit",
    "PolicySignature",
    "keyed_principals",
    "load_trust_root",
    "policy_check",
    "policy_in_force",
    "policy_init",
    "policy_sign",
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


# ---------------------------------------------------------------------- co-signing
@dataclass(frozen=True)
class PolicySignature:
    """What :func:`policy_sign` signed and wrote: the co-signature file (``path``), the admin
    it counts for (``principal``), the ``statement`` signed (the change from the revision in
    force, ``previous``), and the admins whose co-signatures in the work tree now verify for
    this change (``cosigners``) of the ``threshold`` needed (the commit's own signature, by
    an admin, counts too)."""

    path: Path
    principal: str
    statement: str
    previous: str
    cosigners: tuple[str, ...]
    threshold: int
    ignored: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (``uniflow policy sign --json``)."""
        return {
            "path": str(self.path),
            "principal": self.principal,
            "statement": self.statement,
            "previous": self.previous,
            "cosigners": list(self.cosigners),
            "threshold": self.threshold,
            "ignored_cosignatures": list(self.ignored),
        }


def _read_work_file(root: Path, rel: str, limit: int) -> bytes | None:
    """A file of the work tree (None: absent), never through a symbolic link, at most ``limit`` bytes."""
    path = root / rel
    link = first_link(root, path.parent)
    if link is not None:
        raise UsageError(f"{link.relative_to(root)} is a symbolic link or not a folder: refused")
    try:
        fd = open_regular(path)
    except NotRegularFile as exc:
        raise UsageError(f"{rel}: {exc.what}, not a regular file: refused") from None
    if fd is None:
        return None
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UsageError(f"{rel} is larger than {limit} bytes")
    return data


def _work_cosignatures(root: Path) -> tuple[CoSignature, ...]:
    """The ``*.sig`` files of the work tree's signatures folder (bounded; a link or an
    unreadable entry is carried with its problem, as the history reader does)."""
    folder = root / SIGNATURES_DIR
    if not folder.is_dir() or folder.is_symlink():
        return ()
    names = sorted(n for n in os.listdir(folder) if n.endswith(".sig"))
    found: list[CoSignature] = []
    for name in names[:MAX_COSIGNATURES]:
        try:
            data = _read_work_file(root, f"{SIGNATURES_DIR}/{name}", MAX_COSIGNATURE_BYTES)
        except UsageError as exc:
            found.append(CoSignature(name, problem=str(exc)))
            continue
        found.append(CoSignature(name, data) if data is not None else CoSignature(name, problem="gone"))
    if len(names) > MAX_COSIGNATURES:
        extra = len(names) - MAX_COSIGNATURES
        found.append(CoSignature(f"{extra} more", problem=f"more than {MAX_COSIGNATURES} co-signature files"))
    return tuple(found)


def _file_name(principal: str) -> str:
    """``<principal>.sig`` with every character a file name should not hold replaced."""
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "@._+-") else "_" for c in principal)
    return f"{safe.lstrip('.') or 'admin'}.sig"


def _write_signature(root: Path, name: str, armored: str) -> Path:
    """Write ``armored`` to the signatures folder as ``name``, atomically (replacing a
    previous signature of the same admin)."""
    folder = root / SIGNATURES_DIR
    link = first_link(root, folder)
    if link is not None:
        raise UsageError(f"{link.relative_to(root)} is a symbolic link or not a folder: refused")
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / name
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    try:
        with open(tmp, "x", encoding="ascii") as f:
            f.write(armored)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return final


def _work_revision(root: Path, in_force: InForce) -> PolicyRevision:
    """The work tree's policy files as a revision to sign (refused when they change nothing)."""
    policy = _read_work_file(root, POLICY_PATH, MAX_POLICY_FILE)
    signers = _read_work_file(root, SIGNERS_PATH, MAX_POLICY_FILE)
    if policy is None:
        raise UsageError(f"no {POLICY_PATH} in the work tree: removing it never takes effect")
    if (policy, signers or b"") == (in_force.policy_bytes, in_force.allowed_signers):
        raise UsageError(
            f"{POLICY_PATH} and {SIGNERS_PATH} in the work tree are the policy in force "
            f"({in_force.commit[:12]}): there is no change to sign"
        )
    parse_policy(policy, f"{POLICY_PATH} in the work tree")
    return PolicyRevision("", datetime.now().astimezone(), policy, signers, cosignatures=())


def policy_sign(
    repo: Repository, trust_root: str | os.PathLike[str] | TrustRoot | None = None
) -> PolicySignature:
    """Co-sign the change the work tree makes to the policy files, against the policy in force
    on the default branch (verified as :func:`policy_check` does), with the key Git's signing
    settings name; write ``.uniflow/policy-signatures/<principal>.sig`` for the user to commit
    with the change. Refused (one line) when the work tree changes nothing, or when the
    signature could never count: the key is no admin's in the allowed signers in force, or
    its line does not allow the ``uniflow-policy`` namespace now."""
    from .._authority.signing import read_signing_config, signer_from_config

    root = Path(repo.root)
    in_force = policy_check(repo, trust_root).in_force
    revision = _work_revision(root, in_force)
    message = revision_statement(revision, in_force)
    admins = in_force.policy.admins
    armored = signer_from_config(read_signing_config(root)).sign(message, COSIGN_NAMESPACE)
    mine = verify_cosignatures(
        [CoSignature("your signature", armored.encode())],
        message,
        in_force.allowed_signers,
        revision.committed_at,
        admins.principals,
    )
    if not mine.principals:
        reason = mine.ignored[0].split(": ", 1)[-1] if mine.ignored else "it does not verify"
        raise PolicyError(f"your co-signature could never count: {reason}")
    path = _write_signature(root, _file_name(mine.principals[0]), armored)
    present = verify_cosignatures(
        _work_cosignatures(root), message, in_force.allowed_signers, revision.committed_at, admins.principals
    )
    return PolicySignature(
        path,
        mine.principals[0],
        message.decode("ascii"),
        in_force.commit,
        present.principals,
        admins.threshold,
        present.ignored,
    )
