"""Ed25519 verifies go through libsodium (PyNaCl) first, and the verdict stays OpenSSL's.

libsodium only accelerates: a signature it accepts is accepted, one it refuses is handed to
``cryptography``, whose verdict stands. These tests check that the fast path is really taken
for the signatures ``ssh-keygen`` makes, and that no signature, mangled or degenerate, gets a
verdict other than ``cryptography``'s own.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from uniflow import SignatureError
from uniflow._authority.sshsig import (
    PublicKey,
    Signature,
    _sodium_accepts,
    parse_signature,
    signed_data,
    verify_signature,
)

from .conftest import make_key

MESSAGE = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor a <a@x> 1 +0000\n\npromote\n"


def _ssh_keygen_signature(tmp_path: Path, message: bytes) -> tuple[Signature, bytes]:
    key = make_key(tmp_path / "keys", "alice", "ed25519")
    done = subprocess.run(
        ["ssh-keygen", "-Y", "sign", "-f", str(key.path), "-n", "git"],
        input=message,
        capture_output=True,
        timeout=60,
        check=True,
    )
    return parse_signature(done.stdout), message


def _openssl_accepts(sig: Signature, message: bytes) -> bool:
    raw = Ed25519PublicKey.from_public_bytes(sig.public_key.blob[-32:])
    try:
        raw.verify(sig.sig_blob, signed_data("git", message, sig.hash_algorithm, sig.reserved))
    except InvalidSignature:
        return False
    return True


def _ours_accepts(sig: Signature, message: bytes) -> bool:
    try:
        verify_signature(sig, message, "git")
    except SignatureError:
        return False
    return True


def test_an_ssh_keygen_signature_is_accepted_by_libsodium(tmp_path: Path) -> None:
    sig, message = _ssh_keygen_signature(tmp_path, MESSAGE)
    data = signed_data("git", message, sig.hash_algorithm, sig.reserved)
    assert _sodium_accepts(sig.public_key, sig.sig_blob, data)  # the fast path is taken
    verify_signature(sig, message, "git")
    assert not _sodium_accepts(sig.public_key, sig.sig_blob, data + b"x")
    with pytest.raises(SignatureError, match="does not match the signed data"):
        verify_signature(sig, message + b"x", "git")


def test_mangled_signatures_get_openssls_verdict(tmp_path: Path) -> None:
    sig, message = _ssh_keygen_signature(tmp_path, MESSAGE)
    rng = random.Random(25519)
    for _ in range(400):
        blob = bytearray(sig.sig_blob)
        text = bytearray(message)
        if rng.random() < 0.7:
            blob[rng.randrange(64)] ^= 1 << rng.randrange(8)
        else:
            text[rng.randrange(len(text))] ^= 1 << rng.randrange(8)
        mangled = Signature(
            sig.public_key, "git", sig.reserved, sig.hash_algorithm, sig.sig_algorithm, bytes(blob), b""
        )
        assert _ours_accepts(mangled, bytes(text)) == _openssl_accepts(mangled, bytes(text))


def test_a_signature_libsodium_refuses_keeps_openssls_verdict() -> None:
    # A small-order (identity) key with R = identity and S = 0: libsodium refuses small-order
    # points, OpenSSL checks only the equation. The verdict must be the one uniflow gave
    # before libsodium was used, whichever it is.
    identity = b"\x01" + bytes(31)
    key_blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + identity
    key = PublicKey("ssh-ed25519", key_blob)
    sig = Signature(key, "git", b"", "sha512", "ssh-ed25519", identity + bytes(32), b"")
    data = signed_data("git", MESSAGE, "sha512", b"")
    assert not _sodium_accepts(key, sig.sig_blob, data)
    assert _ours_accepts(sig, MESSAGE) == _openssl_accepts(sig, MESSAGE)


def test_the_compiled_call_and_pynacls_public_one_agree(tmp_path: Path) -> None:
    """The fast path calls libsodium through PyNaCl's compiled module (importing
    ``nacl.bindings`` costs a verified get about 8 ms); PyNaCl's public function, the
    fallback, gives the same verdicts."""
    from uniflow._authority.sshsig import _bindings_sign_open, _ed25519_raw, _sodium_sign_open

    sig, message = _ssh_keygen_signature(tmp_path, MESSAGE)
    data = signed_data("git", message, sig.hash_algorithm, sig.reserved)
    raw = _ed25519_raw(sig.public_key.blob)
    compiled, public = _sodium_sign_open(), _bindings_sign_open()
    assert compiled is not None and public is not None and raw is not None
    for signed, accepted in (
        (sig.sig_blob + data, True),
        (sig.sig_blob + data + b"x", False),
        (bytes(64) + data, False),
        (sig.sig_blob[:63], False),  # shorter than a signature
    ):
        assert compiled(signed, raw) is accepted and public(signed, raw) is accepted
