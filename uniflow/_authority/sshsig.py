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

:func:`sign_with_key` makes a signature in-process; :mod:`uniflow._authority.signing` picks
the key from Git's settings and hands what it cannot sign itself to ``ssh-keygen``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._errors import SignatureError

__all__ = [
    "ARMOR_BEGIN",
    "ARMOR_END",
    "GIT_NAMESPACE",
    "KEY_TYPES",
    "MAX_ARMOR",
    "MAX_KEY_TEXT",
    "MAX_NAMESPACE",
    "PublicKey",
    "Signature",
    "armor",
    "openssh_private_key_info",
    "parse_public_key",
    "parse_signature",
    "require_cryptography",
    "sign_with_key",
    "signed_data",
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
#: the longest namespace accepted
MAX_NAMESPACE = 256

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
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", *_ECDSA)
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
        """A length-prefixed field (``uint32`` length, then that many bytes), read in one step."""
        data, pos = self.data, self.pos
        if len(data) - pos < 4:
            raise SignatureError(f"{self.what} is truncated")
        end = pos + 4 + int.from_bytes(data[pos : pos + 4], "big")
        if end > len(data):
            raise SignatureError(f"{self.what} is truncated")
        self.pos = end
        return data[pos + 4 : end]

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
            raise SignatureError(f"unsupported key type {algorithm!r} (supported: {', '.join(KEY_TYPES)})")
        r.done()
        return cls(algorithm, blob)

    @property
    def fingerprint(self) -> str:
        """``SHA256:...``, as ``ssh-keygen -l`` and Git print it."""
        return _fingerprint(self.blob)

    def openssh(self) -> str:
        """The key as one ``.pub`` line without comment: ``ssh-ed25519 AAAA...``."""
        return f"{self.algorithm} {base64.b64encode(self.blob).decode()}"

    def crypto_key(self) -> Any:
        """The key as a ``cryptography`` public key object (imports ``cryptography``); built
        once per key (a lifecycle is signed by a handful of keys)."""
        return _crypto_key(self)

    def _build_crypto_key(self) -> Any:
        require_cryptography()
        r = _Reader(self.blob, "public key")
        r.string()
        if self.algorithm == "ssh-ed25519":
            from cryptography.hazmat.primitives.asymmetric import ed25519

            return ed25519.Ed25519PublicKey.from_public_bytes(r.string())
        from cryptography.hazmat.primitives.asymmetric import ec, rsa

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


@functools.lru_cache(maxsize=256)
def _fingerprint(blob: bytes) -> str:
    """:attr:`PublicKey.fingerprint`, kept per key blob (a lifecycle names a handful of keys)."""
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


@functools.lru_cache(maxsize=256)
def _key_from_blob(blob: bytes) -> PublicKey:
    """:meth:`PublicKey.from_blob`, kept per blob (every signature of a key embeds the same
    blob; a malformed one raises each time)."""
    return PublicKey.from_blob(blob)


@functools.lru_cache(maxsize=256)
def _crypto_key(key: PublicKey) -> Any:
    """:meth:`PublicKey.crypto_key`, kept per key (a bad ECDSA point is an error each time)."""
    return key._build_crypto_key()


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
    return _parse_plain(text) or _parse_signature(text)


_BEGIN_LINE = ARMOR_BEGIN.encode() + b"\n"
_END_LINE = b"\n" + ARMOR_END.encode()
_U32 = struct.Struct(">I").unpack_from


def _parse_plain(text: str | bytes) -> Signature | None:
    """:func:`_parse_signature` of a signature armored as ``ssh-keygen`` writes it (plain
    lines of base64), with the same checks; None when it is any other (or is not well
    formed): the full parser then reads it and names what is wrong."""
    if len(text) > MAX_ARMOR:
        return None
    try:
        armored = (text.encode("ascii") if isinstance(text, str) else bytes(text)).strip()
    except UnicodeEncodeError:
        return None
    start, end = len(_BEGIN_LINE), len(armored) - len(_END_LINE)
    if start > end or not armored.startswith(_BEGIN_LINE) or not armored.endswith(_END_LINE):
        return None
    try:  # the lines joined: anything but base64 between them is refused as the lines would be
        return _signature_of(_b64decode(armored[start:end].replace(b"\n", b""), "signature"))
    except (SignatureError, UnicodeDecodeError):
        return None


def _signature_of(blob: bytes) -> Signature | None:
    """The fields of an SSHSIG ``blob`` read at fixed offsets, each checked as
    :func:`_parse_signature` checks it; None at the first that is not as it should be."""
    n = len(blob)
    if n < 10 or blob[:6] != _MAGIC or _U32(blob, 6)[0] != _VERSION:
        return None
    fields = []
    pos = 10
    for _ in range(5):  # the key, namespace, reserved, hash algorithm and inner signature
        if n - pos < 4 or (end := pos + 4 + _U32(blob, pos)[0]) > n:
            return None
        fields.append(blob[pos + 4 : end])
        pos = end
    key, namespace, reserved, hash_algorithm, inner = fields
    if pos != n or not 0 < len(namespace) <= MAX_NAMESPACE or len(hash_algorithm) > MAX_NAMESPACE:
        return None
    m = len(inner)
    if m < 4 or (cut := 4 + _U32(inner, 0)[0]) > m - 4 or cut - 4 > MAX_NAMESPACE:
        return None
    if cut + 4 + _U32(inner, cut)[0] != m or hash_algorithm.decode("ascii") not in _HASHES:
        return None
    return Signature(
        _key_from_blob(key),
        namespace.decode("ascii"),
        reserved,
        hash_algorithm.decode("ascii"),
        inner[4:cut].decode("ascii"),
        inner[cut + 4 :],
        blob,
    )


def _parse_signature(text: str | bytes) -> Signature:
    """:func:`parse_signature`, each field read and checked in turn."""
    blob = _dearmor(text)
    r = _Reader(blob, "signature")
    if r.take(len(_MAGIC)) != _MAGIC:
        raise SignatureError("signature does not start with the SSHSIG magic")
    version = r.u32()
    if version != _VERSION:
        raise SignatureError(f"signature has SSHSIG version {version}, expected {_VERSION}")
    key = _key_from_blob(r.string())
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
    return _signed_prefix(namespace, reserved, hash_algorithm) + _string(digest)


@functools.lru_cache(maxsize=64)
def _signed_prefix(namespace: str, reserved: bytes, hash_algorithm: str) -> bytes:
    """The part of :func:`signed_data` before the message's digest (the same for every
    signature of a namespace)."""
    return _MAGIC + _string(namespace.encode()) + _string(reserved) + _string(hash_algorithm.encode())


def verify_signature(sig: Signature, message: bytes, namespace: str) -> None:
    """Check that ``sig`` signs ``message`` in ``namespace`` with its own embedded key.

    Raises :class:`SignatureError` naming why not. Whether the key may sign is the job of
    :mod:`uniflow._authority.allowed_signers`.
    """
    if sig.namespace != namespace:
        raise SignatureError(f"signature is for namespace {sig.namespace!r}, not {namespace!r}")
    data = signed_data(namespace, message, sig.hash_algorithm, sig.reserved)
    try:
        _VERIFIERS[sig.public_key.algorithm](sig, data)
    except SignatureError:
        raise
    except Exception as err:
        # cryptography is imported by then: only its refusal is a bad signature
        if not isinstance(err, _invalid_signature()):
            raise
        raise SignatureError(
            f"signature does not match the signed data (key {sig.public_key.fingerprint})"
        ) from None


@functools.cache
def _invalid_signature() -> type[Exception]:
    """``cryptography``'s InvalidSignature, imported once, when a verify first raises (a chain
    whose signatures libsodium all accepts never imports ``cryptography``)."""
    require_cryptography()
    from cryptography.exceptions import InvalidSignature

    return InvalidSignature


def _verify_ed25519(sig: Signature, data: bytes) -> None:
    if sig.sig_algorithm != "ssh-ed25519" or len(sig.sig_blob) != 64:
        raise SignatureError(f"signature type {sig.sig_algorithm!r} does not fit an Ed25519 key")
    if _sodium_accepts(sig.public_key, sig.sig_blob, data):
        return
    sig.public_key.crypto_key().verify(sig.sig_blob, data)


def _sodium_accepts(key: PublicKey, sig_blob: bytes, data: bytes) -> bool:
    """Whether libsodium (through PyNaCl, when installed) accepts an Ed25519 signature.

    An accelerator only: libsodium's verify costs about half of OpenSSL's, and it checks
    everything OpenSSL's does (a canonical S, a decodable key, the same cofactorless equation
    compared byte for byte) plus more (small-order keys and R refused). So a signature it
    accepts, OpenSSL accepts; one it refuses is handed to ``cryptography``, whose verdict
    stands. The verdict is the same with or without PyNaCl installed.
    """
    sign_open = _sodium_sign_open()
    raw = _ed25519_raw(key.blob)
    if sign_open is None or raw is None:
        return False
    return sign_open(sig_blob + data, raw)


@functools.cache
def _sodium_sign_open() -> Callable[[bytes, bytes], bool] | None:
    """libsodium's ``crypto_sign_open`` (the Ed25519 verify of a signature followed by its
    message) as ``(signed message, 32-byte key) -> accepted``; ``None`` without PyNaCl.

    It is called through PyNaCl's compiled module ``nacl._sodium`` (PyNaCl's own functions
    call the same ``lib.crypto_sign_open``): importing ``nacl.bindings`` imports some forty
    modules, about 8 ms of a verified ``uniflow get``, for this one function. Where that
    module is missing or lacks the function (another PyNaCl), ``nacl.bindings`` is used.
    """
    try:
        from nacl._sodium import ffi, lib
    except ImportError:
        return _bindings_sign_open()
    if not hasattr(lib, "crypto_sign_open") or lib.sodium_init() < 0:
        return _bindings_sign_open()

    def sign_open(signed: bytes, public_key: bytes) -> bool:
        out = ffi.new("unsigned char[]", len(signed))
        length = ffi.new("unsigned long long *")
        return bool(lib.crypto_sign_open(out, length, signed, len(signed), public_key) == 0)

    return sign_open


def _bindings_sign_open() -> Callable[[bytes, bytes], bool] | None:
    """:func:`_sodium_sign_open` through PyNaCl's public ``nacl.bindings``."""
    try:
        from nacl.bindings import crypto_sign_open
        from nacl.exceptions import CryptoError
    except ImportError:
        return None

    def sign_open(signed: bytes, public_key: bytes) -> bool:
        try:
            crypto_sign_open(signed, public_key)
        except (CryptoError, ValueError, TypeError):
            return False
        return True

    return sign_open


@functools.lru_cache(maxsize=256)
def _ed25519_raw(blob: bytes) -> bytes | None:
    """The 32 key bytes of an ``ssh-ed25519`` public key blob (kept per key); ``None`` for a
    key of another length, left to ``cryptography`` to refuse."""
    r = _Reader(blob, "public key")
    r.string()
    raw = r.string()
    return raw if len(raw) == 32 else None


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


def require_cryptography() -> None:
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise SignatureError(
            "SSH signatures need the 'cryptography' package: pip install 'uniflow-registry[signing]'"
        ) from None


# -- signing with a key in memory ----------------------------------------------------------


def sign_with_key(private_key: Any, public_key: PublicKey, message: bytes, namespace: str) -> str:
    """Sign ``message`` in ``namespace`` with a ``cryptography`` private key, SHA-512 as
    ``ssh-keygen -Y sign`` does; the armored signature ends with a newline."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    if not namespace or len(namespace) > MAX_NAMESPACE or not namespace.isascii():
        raise SignatureError(f"invalid signature namespace {namespace!r}")
    data = signed_data(namespace, message, "sha512")
    algorithm = public_key.algorithm
    if algorithm == "ssh-ed25519":
        inner = _string(algorithm.encode()) + _string(private_key.sign(data))
    elif algorithm in _ECDSA:
        der = private_key.sign(data, ec.ECDSA(_hash(_ECDSA[algorithm][1])))
        r, s = decode_dss_signature(der)
        inner = _string(algorithm.encode()) + _string(_mpint(r) + _mpint(s))
    else:
        raw = private_key.sign(data, padding.PKCS1v15(), hashes.SHA512())
        inner = _string(b"rsa-sha2-512") + _string(raw)
    blob = (
        _MAGIC
        + _VERSION.to_bytes(4, "big")
        + _string(public_key.blob)
        + _string(namespace.encode())
        + _string(b"")
        + _string(b"sha512")
        + _string(inner)
    )
    return armor(blob)


def openssh_private_key_info(data: bytes) -> tuple[PublicKey, bool] | None:
    """The public key of an OpenSSH-format private key file and whether the file is encrypted
    (``None``: not that format); the public half is readable without the passphrase."""
    text = data.strip().splitlines()
    if not text or text[0].strip() != b"-----BEGIN OPENSSH PRIVATE KEY-----":
        return None
    if text[-1].strip() != b"-----END OPENSSH PRIVATE KEY-----":
        raise SignatureError("private key file: no END OPENSSH PRIVATE KEY line")
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
