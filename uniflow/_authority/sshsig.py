"""SSH signatures in OpenSSH's SSHSIG format (``PROTOCOL.sshsig``), as Git writes them.

An armored signature is::

    -----BEGIN SSH SIGNATURE-----
    base64 of the blob, wrapped at 70 columns
    -----END SSH SIGNATURE-----

and its blob is ``"SSHSIG" uint32(1) string(publickey) string(namespace) string(reserved)
string(hash_algorithm) string(signature)``. The signature covers ``"SSHSIG"
string(namespace) string(reserved) string(hash_algorithm) string(H(message))``, so a
signature made for one namespace (Git uses ``"git"``) never verifies in another.

Parsing is bounded (the armor and every field are size-checked before anything is decoded)
and every malformed input is a one-line :class:`~uniflow.SignatureError`. Verification uses
the ``cryptography`` package, imported on first use: Ed25519, ECDSA over NIST P-256, P-384
and P-521, and RSA (``rsa-sha2-256``/``rsa-sha2-512``, at least 2048 bits). Security-key
(``sk-*``) and certificate keys are refused as unsupported.

Signing (see :func:`load_signer`) happens in-process for an unencrypted private key file;
a passphrase-protected key, a public key file (the private half in ``ssh-agent``) or a
literal ``key::ssh-ed25519 AAAA...`` key is handed to ``ssh-keygen -Y sign`` as Git does.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from .._errors import SignatureError, SigningError

__all__ = [
    "ARMOR_BEGIN",
    "ARMOR_END",
    "GIT_NAMESPACE",
    "MAX_ARMOR",
    "KeySigner",
    "ProgramSigner",
    "PublicKey",
    "Signature",
    "Signer",
    "SigningConfig",
    "armor",
    "load_signer",
    "parse_public_key",
    "parse_signature",
    "read_signing_config",
    "signed_data",
    "signer_from_config",
    "verify_signature",
]

ARMOR_BEGIN = "-----BEGIN SSH SIGNATURE-----"
ARMOR_END = "-----END SSH SIGNATURE-----"
#: the namespace Git signs commits, tags and pushes in
GIT_NAMESPACE = "git"
#: the longest armored signature accepted, in characters (an RSA-16384 one is under 6 KiB)
MAX_ARMOR = 16 * 1024
#: the longest public key line or key blob accepted
MAX_KEY_TEXT = 16 * 1024
#: the largest private key file read
MAX_PRIVATE_KEY = 64 * 1024
#: the longest namespace accepted
MAX_NAMESPACE = 256
#: seconds ``ssh-keygen -Y sign`` (or ``gpg.ssh.program``) may take: it may ask a passphrase
SIGN_TIMEOUT = 300.0
#: seconds ``git config`` or ``gpg.ssh.defaultKeyCommand`` may take
CONFIG_TIMEOUT = 30.0

_MAGIC = b"SSHSIG"
_VERSION = 1
_WRAP = 70
_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
# ECDSA key type -> (curve name in the blob, hash of the signature)
_ECDSA = {
    "ecdsa-sha2-nistp256": ("nistp256", "sha256"),
    "ecdsa-sha2-nistp384": ("nistp384", "sha384"),
    "ecdsa-sha2-nistp521": ("nistp521", "sha512"),
}
_RSA_SIG_HASH = {"rsa-sha2-256": "sha256", "rsa-sha2-512": "sha512"}
_MIN_RSA_BITS = 2048
#: the longest integer accepted (an RSA-16384 modulus, with its sign byte)
_MAX_MPINT = 16384 // 8 + 1
_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", *_ECDSA)
_B64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}")


# -- the SSH wire format ---------------------------------------------------------------------


class _Reader:
    """Reads SSH wire fields from ``data``; every overrun is a :class:`SignatureError`."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, n: int) -> bytes:
        if n > len(self.data) - self.pos:
            raise SignatureError(f"{self.what} is truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return int.from_bytes(self.take(4), "big")

    def string(self) -> bytes:
        return self.take(self.u32())

    def text(self, field: str, limit: int = MAX_NAMESPACE) -> str:
        raw = self.string()
        if len(raw) > limit:
            raise SignatureError(f"{self.what}: {field} is longer than {limit} bytes")
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise SignatureError(f"{self.what}: {field} is not ASCII") from None

    def mpint(self, field: str) -> int:
        raw = self.string()
        if len(raw) > _MAX_MPINT:
            raise SignatureError(f"{self.what}: {field} is longer than {_MAX_MPINT} bytes")
        if raw and raw[0] & 0x80:
            raise SignatureError(f"{self.what}: {field} is negative")
        return int.from_bytes(raw, "big")

    def done(self) -> None:
        if self.pos != len(self.data):
            raise SignatureError(f"{self.what} has {len(self.data) - self.pos} unexpected trailing bytes")


def _string(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _mpint(n: int) -> bytes:
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return _string(b"\x00" + raw if raw and raw[0] & 0x80 else raw)


def _b64decode(text: bytes, what: str) -> bytes:
    if not _B64.fullmatch(text):
        raise SignatureError(f"{what} is not base64")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError(f"{what} is not valid base64") from None


# -- public keys -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PublicKey:
    """An SSH public key: its type name and its wire blob (what ``.pub`` files hold in base64)."""

    algorithm: str
    blob: bytes

    @classmethod
    def from_blob(cls, blob: bytes) -> PublicKey:
        """Parse and check a key blob; an unsupported or malformed key is a :class:`SignatureError`."""
        if len(blob) > MAX_KEY_TEXT:
            raise SignatureError(f"public key blob is larger than {MAX_KEY_TEXT} bytes")
        r = _Reader(blob, "public key")
        algorithm = r.text("key type")
        if algorithm == "ssh-ed25519":
            if len(r.string()) != 32:
                raise SignatureError("public key: an Ed25519 key is not 32 bytes")
        elif algorithm in _ECDSA:
            if r.text("curve") != _ECDSA[algorithm][0]:
                raise SignatureError(f"public key: curve does not match key type {algorithm}")
            point = r.string()
            if not point or point[0] != 4:
                raise SignatureError("public key: the ECDSA point is not uncompressed")
        elif algorithm == "ssh-rsa":
            r.mpint("RSA exponent")
            if r.mpint("RSA modulus").bit_length() < _MIN_RSA_BITS:
                raise SignatureError(f"public key: RSA keys under {_MIN_RSA_BITS} bits are refused")
        else:
            raise SignatureError(f"unsupported key type {algorithm!r} (supported: {', '.join(_KEY_TYPES)})")
        r.done()
        return cls(algorithm, blob)

    @property
    def fingerprint(self) -> str:
        """``SHA256:...``, as ``ssh-keygen -l`` and Git print it."""
        digest = base64.b64encode(hashlib.sha256(self.blob).digest()).decode().rstrip("=")
        return f"SHA256:{digest}"

    def openssh(self) -> str:
        """The key as one ``.pub`` line without comment: ``ssh-ed25519 AAAA...``."""
        return f"{self.algorithm} {base64.b64encode(self.blob).decode()}"

    def crypto_key(self) -> Any:
        """The key as a ``cryptography`` public key object (imports ``cryptography``)."""
        _require_cryptography()
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

        r = _Reader(self.blob, "public key")
        r.string()
        if self.algorithm == "ssh-ed25519":
            return ed25519.Ed25519PublicKey.from_public_bytes(r.string())
        if self.algorithm in _ECDSA:
            r.string()
            name = _ECDSA[self.algorithm][0]
            curve = (
                ec.SECP256R1()
                if name == "nistp256"
                else ec.SECP384R1()
                if name == "nistp384"
                else ec.SECP521R1()
            )
            try:
                return ec.EllipticCurvePublicKey.from_encoded_point(curve, r.string())
            except ValueError:
                raise SignatureError("public key: the ECDSA point is not on its curve") from None
        e = r.mpint("RSA exponent")
        return rsa.RSAPublicNumbers(e, r.mpint("RSA modulus")).public_key()


def parse_public_key(text: str) -> PublicKey:
    """Parse one public key line ``keytype base64 [comment]`` (a ``.pub`` file's content)."""
    if len(text) > MAX_KEY_TEXT:
        raise SignatureError(f"public key text is longer than {MAX_KEY_TEXT} characters")
    fields = text.split()
    if len(fields) < 2:
        raise SignatureError("public key: expected 'keytype base64 [comment]'")
    key = PublicKey.from_blob(_b64decode(fields[1].encode("ascii", "replace"), "public key"))
    if key.algorithm != fields[0]:
        raise SignatureError(f"public key: type {fields[0]!r} does not match its blob ({key.algorithm})")
    return key


# -- signatures ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signature:
    """A parsed SSHSIG signature; ``blob`` is the whole decoded signature blob."""

    public_key: PublicKey
    namespace: str
    reserved: bytes
    hash_algorithm: str
    sig_algorithm: str
    sig_blob: bytes
    blob: bytes

    def armor(self) -> str:
        """The signature armored as ``ssh-keygen`` writes it (ends with a newline)."""
        return armor(self.blob)


def armor(blob: bytes) -> str:
    """Armor a signature blob: begin line, base64 wrapped at 70 columns, end line."""
    b64 = base64.b64encode(blob).decode()
    lines = [b64[i : i + _WRAP] for i in range(0, len(b64), _WRAP)]
    return "\n".join([ARMOR_BEGIN, *lines, ARMOR_END]) + "\n"


def _dearmor(text: str | bytes) -> bytes:
    if len(text) > MAX_ARMOR:
        raise SignatureError(f"signature is larger than {MAX_ARMOR} bytes")
    raw = text.encode("ascii", "replace") if isinstance(text, str) else bytes(text)
    lines = [line.strip() for line in raw.strip().splitlines()]
    if not lines or lines[0] != ARMOR_BEGIN.encode():
        raise SignatureError(f"signature does not start with {ARMOR_BEGIN}")
    if len(lines) < 3 or lines[-1] != ARMOR_END.encode():
        raise SignatureError(f"signature does not end with {ARMOR_END}")
    return _b64decode(b"".join(lines[1:-1]), "signature")


def parse_signature(text: str | bytes) -> Signature:
    """Parse an armored SSH signature; any malformed or oversize input is a :class:`SignatureError`."""
    blob = _dearmor(text)
    r = _Reader(blob, "signature")
    if r.take(len(_MAGIC)) != _MAGIC:
        raise SignatureError("signature does not start with the SSHSIG magic")
    version = r.u32()
    if version != _VERSION:
        raise SignatureError(f"signature has SSHSIG version {version}, expected {_VERSION}")
    key = PublicKey.from_blob(r.string())
    namespace = r.text("namespace")
    if not namespace:
        raise SignatureError("signature has an empty namespace")
    reserved = r.string()
    hash_algorithm = r.text("hash algorithm")
    if hash_algorithm not in _HASHES:
        raise SignatureError(f"signature uses unsupported hash {hash_algorithm!r} (sha256 or sha512)")
    inner = _Reader(r.string(), "signature")
    sig_algorithm = inner.text("signature type")
    sig_blob = inner.string()
    inner.done()
    r.done()
    return Signature(key, namespace, reserved, hash_algorithm, sig_algorithm, sig_blob, blob)


def signed_data(
    namespace: str, message: bytes, hash_algorithm: str = "sha512", reserved: bytes = b""
) -> bytes:
    """What an SSH signature over ``message`` in ``namespace`` actually signs."""
    digest = _HASHES[hash_algorithm](message).digest()
    return (
        _MAGIC
        + _string(namespace.encode())
        + _string(reserved)
        + _string(hash_algorithm.encode())
        + _string(digest)
    )


def verify_signature(sig: Signature, message: bytes, namespace: str) -> None:
    """Check that ``sig`` signs ``message`` in ``namespace`` with its own embedded key.

    Raises :class:`SignatureError` naming why not. Whether the key may sign is the job of
    :mod:`uniflow._authority.allowed_signers`.
    """
    if sig.namespace != namespace:
        raise SignatureError(f"signature is for namespace {sig.namespace!r}, not {namespace!r}")
    _require_cryptography()
    from cryptography.exceptions import InvalidSignature

    data = signed_data(namespace, message, sig.hash_algorithm, sig.reserved)
    try:
        _VERIFIERS[sig.public_key.algorithm](sig, data)
    except InvalidSignature:
        raise SignatureError(
            f"signature does not match the signed data (key {sig.public_key.fingerprint})"
        ) from None


def _verify_ed25519(sig: Signature, data: bytes) -> None:
    if sig.sig_algorithm != "ssh-ed25519" or len(sig.sig_blob) != 64:
        raise SignatureError(f"signature type {sig.sig_algorithm!r} does not fit an Ed25519 key")
    sig.public_key.crypto_key().verify(sig.sig_blob, data)


def _verify_ecdsa(sig: Signature, data: bytes) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    if sig.sig_algorithm != sig.public_key.algorithm:
        raise SignatureError(
            f"signature type {sig.sig_algorithm!r} does not fit a {sig.public_key.algorithm} key"
        )
    r = _Reader(sig.sig_blob, "ECDSA signature")
    rs = (r.mpint("r"), r.mpint("s"))
    r.done()
    hash_alg = _hash(_ECDSA[sig.public_key.algorithm][1])
    sig.public_key.crypto_key().verify(encode_dss_signature(*rs), data, ec.ECDSA(hash_alg))


def _verify_rsa(sig: Signature, data: bytes) -> None:
    from cryptography.hazmat.primitives.asymmetric import padding

    if sig.sig_algorithm not in _RSA_SIG_HASH:
        raise SignatureError(f"signature type {sig.sig_algorithm!r} refused (rsa-sha2-256 or rsa-sha2-512)")
    hash_alg = _hash(_RSA_SIG_HASH[sig.sig_algorithm])
    sig.public_key.crypto_key().verify(sig.sig_blob, data, padding.PKCS1v15(), hash_alg)


_VERIFIERS: dict[str, Callable[[Signature, bytes], None]] = {
    "ssh-ed25519": _verify_ed25519,
    "ssh-rsa": _verify_rsa,
    **{name: _verify_ecdsa for name in _ECDSA},
}


def _hash(name: str) -> Any:
    """A ``cryptography`` hash object by name (sha256, sha384, sha512)."""
    from cryptography.hazmat.primitives import hashes

    return hashes.SHA256() if name == "sha256" else hashes.SHA384() if name == "sha384" else hashes.SHA512()


def _require_cryptography() -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise SignatureError(
            "SSH signatures need the 'cryptography' package: pip install 'uniflow-registry[signing]'"
        ) from None


# -- signing ---------------------------------------------------------------------------------


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
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec, padding
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        if not namespace or len(namespace) > MAX_NAMESPACE or not namespace.isascii():
            raise SigningError(f"invalid signature namespace {namespace!r}")
        data = signed_data(namespace, message, "sha512")
        algorithm = self._public.algorithm
        if algorithm == "ssh-ed25519":
            inner = _string(algorithm.encode()) + _string(self._key.sign(data))
        elif algorithm in _ECDSA:
            der = self._key.sign(data, ec.ECDSA(_hash(_ECDSA[algorithm][1])))
            r, s = decode_dss_signature(der)
            inner = _string(algorithm.encode()) + _string(_mpint(r) + _mpint(s))
        else:
            raw = self._key.sign(data, padding.PKCS1v15(), hashes.SHA512())
            inner = _string(b"rsa-sha2-512") + _string(raw)
        blob = (
            _MAGIC
            + _VERSION.to_bytes(4, "big")
            + _string(self._public.blob)
            + _string(namespace.encode())
            + _string(b"")
            + _string(b"sha512")
            + _string(inner)
        )
        return armor(blob)


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
        """The signing key when known (a literal key, or a ``.pub`` file next to the key)."""
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


def _openssh_private_public(data: bytes) -> tuple[PublicKey, bool] | None:
    """The public key and whether it is encrypted, of an OpenSSH-format private key file."""
    text = data.strip().splitlines()
    if not text or text[0].strip() != b"-----BEGIN OPENSSH PRIVATE KEY-----":
        return None
    if text[-1].strip() != b"-----END OPENSSH PRIVATE KEY-----":
        raise SigningError("private key file: no END OPENSSH PRIVATE KEY line")
    try:
        blob = _b64decode(b"".join(line.strip() for line in text[1:-1]), "private key file")
        r = _Reader(blob, "private key file")
        if r.take(15) != b"openssh-key-v1\x00":
            raise SignatureError("private key file: not openssh-key-v1")
        cipher = r.string()
        r.string()  # kdf name
        r.string()  # kdf options
        if r.u32() != 1:
            raise SignatureError("private key file holds more than one key")
        return PublicKey.from_blob(r.string()), cipher != b"none"
    except SignatureError as exc:
        raise SigningError(str(exc)) from None


def _load_key_file(path: Path, program: str, cwd: Path | None) -> Signer:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PRIVATE_KEY + 1)
    except OSError as exc:
        raise SigningError(f"cannot read signing key {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_PRIVATE_KEY:
        raise SigningError(f"signing key {path} is larger than {MAX_PRIVATE_KEY} bytes")
    if data.lstrip().split(b" ", 1)[0].decode("ascii", "replace") in _KEY_TYPES:
        try:  # a public key file: the private half is in ssh-agent
            public = parse_public_key(data.decode("ascii", "replace"))
        except SignatureError as exc:
            raise SigningError(f"signing key {path}: {exc}") from None
        return ProgramSigner(program, path, public, cwd=cwd)
    found = _openssh_private_public(data)
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
        _require_cryptography()
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
