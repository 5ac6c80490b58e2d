"""Signing as Git does, from Git's own settings.

``user.signingKey`` (with ``gpg.format=ssh``) is a literal public key ``key::ssh-ed25519
AAAA...`` (the private half in ``ssh-agent``), or a path to a public key file (also the
agent) or to a private key. An unencrypted private key signs in-process with
``cryptography``; everything else goes to ``ssh-keygen -Y sign -n NAMESPACE -f KEY`` (or
``gpg.ssh.program``), which talks to the agent or asks the passphrase. Without
``user.signingKey``, ``gpg.ssh.defaultKeyCommand`` prints the key to use. Every failure is
one :class:`~uniflow.SigningError` line saying what is missing.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .._errors import SignatureError, SigningError
from .sshsig import (
    KEY_TYPES,
    PublicKey,
    openssh_private_key_info,
    parse_public_key,
    parse_signature,
    require_cryptography,
    sign_with_key,
    verify_signature,
)

__all__ = [
    "CONFIG_TIMEOUT",
    "MAX_PRIVATE_KEY",
    "SIGN_TIMEOUT",
    "KeySigner",
    "ProgramSigner",
    "Signer",
    "SigningConfig",
    "load_signer",
    "read_signing_config",
    "signer_from_config",
]

#: the largest private key file read
MAX_PRIVATE_KEY = 64 * 1024
#: seconds ``ssh-keygen -Y sign`` (or ``gpg.ssh.program``) may take: it may ask a passphrase
SIGN_TIMEOUT = 300.0
#: seconds ``git config`` or ``gpg.ssh.defaultKeyCommand`` may take
CONFIG_TIMEOUT = 30.0


class Signer(Protocol):
    """Something that makes armored SSH signatures."""

    @property
    def public_key(self) -> PublicKey | None:
        """The signing key, when known before signing."""
        ...

    def sign(self, message: bytes, namespace: str) -> str:
        """An armored SSHSIG signature of ``message`` in ``namespace`` (ends with a newline)."""
        ...


class KeySigner:
    """Signs in-process with an unencrypted private key (a ``cryptography`` key object)."""

    def __init__(self, private_key: Any, public_key: PublicKey) -> None:
        self._key = private_key
        self._public = public_key

    @property
    def public_key(self) -> PublicKey:
        """The key this signer signs with."""
        return self._public

    def sign(self, message: bytes, namespace: str) -> str:
        """Sign ``message`` in ``namespace`` with SHA-512, as ``ssh-keygen -Y sign`` does."""
        try:
            return sign_with_key(self._key, self._public, message, namespace)
        except SignatureError as exc:
            raise SigningError(str(exc)) from None


class ProgramSigner:
    """Signs with ``ssh-keygen -Y sign -n NAMESPACE -f KEY`` (or ``gpg.ssh.program``), as Git does.

    ``key_file`` is a private key (``ssh-keygen`` asks its passphrase), a public key file
    (the private half in ``ssh-agent``), or, with ``literal`` set, a literal public key that
    is written to a temporary file and signed with through the agent (``-U``).
    """

    def __init__(
        self,
        program: str,
        key_file: Path | None,
        public_key: PublicKey | None,
        *,
        literal: bool = False,
        cwd: Path | None = None,
    ) -> None:
        if key_file is None and not (literal and public_key is not None):
            raise SigningError("a program signer needs a key file or a literal public key")
        self.program = program
        self.key_file = key_file
        self._public = public_key
        self.literal = literal
        self.cwd = cwd

    @property
    def public_key(self) -> PublicKey | None:
        """The signing key when known: a literal key, a public key file, or the public half an
        OpenSSH private key file carries unencrypted."""
        return self._public

    def sign(self, message: bytes, namespace: str) -> str:
        """Run the signing program on ``message``; its output must be a valid signature by the key."""
        if self.literal:
            assert self._public is not None
            fd, tmp = tempfile.mkstemp(prefix=".uniflow-signing-key-", suffix=".pub")
            try:
                with os.fdopen(fd, "w") as f:
                    f.write(self._public.openssh() + "\n")
                return self._run(Path(tmp), message, namespace)
            finally:
                os.unlink(tmp)
        assert self.key_file is not None
        return self._run(self.key_file, message, namespace)

    def _run(self, key_file: Path, message: bytes, namespace: str) -> str:
        args = [self.program, "-Y", "sign", "-n", namespace, "-f", str(key_file)]
        if self.literal:
            args.append("-U")
        try:
            proc = subprocess.run(
                args, input=message, capture_output=True, timeout=SIGN_TIMEOUT, cwd=self.cwd, check=False
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise SigningError(f"cannot run {self.program}: {exc}") from None
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        reason = next((line for line in reversed(err) if not line.startswith("Signing ")), "")
        if proc.returncode != 0:
            raise SigningError(
                f"{self.program} -Y sign failed (exit {proc.returncode}): {reason or 'no message'}"
            )
        text = proc.stdout.decode("ascii", "replace")
        try:
            sig = parse_signature(text)
            verify_signature(sig, message, namespace)
        except SignatureError as exc:
            raise SigningError(f"{self.program} -Y sign wrote no valid signature: {exc}") from None
        if self._public is not None and sig.public_key != self._public:
            raise SigningError(
                f"{self.program} signed with {sig.public_key.fingerprint}, not {self._public.fingerprint}"
            )
        return text if text.endswith("\n") else text + "\n"


def _load_key_file(path: Path, program: str, cwd: Path | None) -> Signer:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PRIVATE_KEY + 1)
    except OSError as exc:
        raise SigningError(f"cannot read signing key {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_PRIVATE_KEY:
        raise SigningError(f"signing key {path} is larger than {MAX_PRIVATE_KEY} bytes")
    if data.lstrip().split(b" ", 1)[0].decode("ascii", "replace") in KEY_TYPES:
        try:  # a public key file: the private half is in ssh-agent
            public = parse_public_key(data.decode("ascii", "replace"))
        except SignatureError as exc:
            raise SigningError(f"signing key {path}: {exc}") from None
        return ProgramSigner(program, path, public, cwd=cwd)
    try:
        found = openssh_private_key_info(data)
    except SignatureError as exc:
        raise SigningError(f"signing key {path}: {exc}") from None
    if found is None:
        raise SigningError(f"signing key {path} is not an OpenSSH private or public key")
    public, encrypted = found
    if encrypted:
        return ProgramSigner(program, path, public, cwd=cwd)
    _require_signing_crypto()
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    try:
        private = load_ssh_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SigningError(f"signing key {path}: {exc}") from None
    return KeySigner(private, public)


def _require_signing_crypto() -> None:
    try:
        require_cryptography()
    except SignatureError as exc:
        raise SigningError(str(exc)) from None


def _literal_key(key: str) -> str | None:
    """The public key text of a literal ``user.signingKey`` (``key::...`` or ``ssh-...``)."""
    if key.startswith("key::"):
        return key[len("key::") :]
    if key.startswith(("ssh-", "ecdsa-")):
        return key
    return None


def load_signer(key: str, *, program: str = "ssh-keygen", cwd: Path | None = None) -> Signer:
    """The signer for a ``user.signingKey`` value, as Git interprets it.

    A literal ``key::ssh-ed25519 AAAA...`` (or a bare ``ssh-...`` key) signs through
    ``ssh-agent``; a path (``~`` expanded, relative to ``cwd``) to a public key file signs
    through the agent too; an unencrypted private key signs in-process; a passphrase-protected
    one goes to ``program -Y sign``, which asks the passphrase.
    """
    literal = _literal_key(key.strip())
    if literal is not None:
        try:
            public = parse_public_key(literal)
        except SignatureError as exc:
            raise SigningError(f"user.signingKey: {exc}") from None
        return ProgramSigner(program, None, public, literal=True, cwd=cwd)
    path = Path(key.strip()).expanduser()
    if cwd is not None and not path.is_absolute():
        path = cwd / path
    return _load_key_file(path, program, cwd)


# -- Git's settings --------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningConfig:
    """Git's signing settings: ``gpg.format``, ``user.signingKey``, ``gpg.ssh.program``,
    ``gpg.ssh.defaultKeyCommand``; ``cwd`` is the repository the values were read in."""

    format: str = "openpgp"
    signing_key: str | None = None
    program: str = "ssh-keygen"
    default_key_command: str | None = None
    cwd: Path | None = None

    @property
    def configured(self) -> bool:
        """Whether Git would sign with an SSH key (``gpg.format=ssh`` and a key or key command)."""
        return self.format == "ssh" and bool(self.signing_key or self.default_key_command)


_CONFIG_KEYS = {
    "gpg.format": "format",
    "user.signingkey": "signing_key",
    "gpg.ssh.program": "program",
    "gpg.ssh.defaultkeycommand": "default_key_command",
}


def read_signing_config(repo: Path | None = None) -> SigningConfig:
    """Read Git's signing settings (all config scopes) with ``git config`` in ``repo``."""
    args = ["git", "config", "-z", "--get-regexp", r"^(gpg\.format|user\.signingkey|gpg\.ssh\.program|"]
    args[-1] += r"gpg\.ssh\.defaultkeycommand)$"
    if repo is not None:
        args[1:1] = ["-C", str(repo)]
    try:
        proc = subprocess.run(args, capture_output=True, timeout=CONFIG_TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError) as exc:
        raise SigningError(f"cannot read Git's signing settings: {exc}") from None
    if proc.returncode not in (0, 1):  # 1: none of the keys is set
        reason = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SigningError(f"cannot read Git's signing settings: {reason[-1] if reason else proc.returncode}")
    values: dict[str, str] = {}
    for entry in proc.stdout.decode("utf-8", "replace").split("\0"):
        name, _, value = entry.partition("\n")
        if name.lower() in _CONFIG_KEYS:
            values[_CONFIG_KEYS[name.lower()]] = value  # the last value of a key wins, as in Git
    return SigningConfig(
        format=values.get("format", "openpgp").lower(),
        signing_key=values.get("signing_key") or None,
        program=values.get("program") or "ssh-keygen",
        default_key_command=values.get("default_key_command") or None,
        cwd=repo,
    )


def _default_key(config: SigningConfig) -> str:
    assert config.default_key_command is not None
    try:
        proc = subprocess.run(
            config.default_key_command.split(),
            capture_output=True,
            timeout=CONFIG_TIMEOUT,
            cwd=config.cwd,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise SigningError(f"gpg.ssh.defaultKeyCommand failed: {exc}") from None
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        if proc.returncode == 0 and _literal_key(line.strip()) is not None:
            return line.strip()
    raise SigningError("gpg.ssh.defaultKeyCommand printed no 'key::' or 'ssh-' public key")


def signer_from_config(config: SigningConfig) -> Signer:
    """The signer Git's settings name; a one-line :class:`SigningError` says what is missing."""
    if config.format != "ssh":
        raise SigningError(
            f"gpg.format is {config.format!r}: uniflow signs with SSH keys only (git config gpg.format ssh)"
        )
    key = config.signing_key
    if key is None:
        if config.default_key_command is None:
            raise SigningError("no signing key: git config user.signingKey ~/.ssh/id_ed25519.pub")
        key = _default_key(config)
    return load_signer(key, program=config.program, cwd=config.cwd)
