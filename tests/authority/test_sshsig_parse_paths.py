"""``parse_signature`` reads a signature armored as ``ssh-keygen`` writes it at fixed offsets
and anything else field by field: both must agree on every input, good or hostile (the same
signature, or the same one-line :class:`SignatureError`)."""

from __future__ import annotations

import base64
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uniflow._authority.sshsig import (
    MAX_ARMOR,
    PublicKey,
    Signature,
    _parse_signature,
    armor,
    parse_signature,
    sign_with_key,
)
from uniflow._errors import SignatureError

pytest.importorskip("cryptography")
from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: E402


def _signed() -> str:
    private = ed25519.Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes_raw()
    key = PublicKey.from_blob(b"\0\0\0\x0bssh-ed25519" + struct.pack(">I", len(raw)) + raw)
    return sign_with_key(private, key, b"tree 1234\n", "git")


GOOD = _signed()
BLOB = parse_signature(GOOD).blob


def _outcome(parse: object, text: str | bytes) -> Signature | str:
    try:
        return parse(text)  # type: ignore[operator, no-any-return]
    except SignatureError as exc:
        return f"error: {exc}"


def _agree(text: str | bytes) -> Signature | str:
    fast, full = _outcome(parse_signature, text), _outcome(_parse_signature, text)
    assert fast == full
    return fast


def _field(blob: bytes, index: int) -> tuple[int, int]:
    """Where the length prefix of field ``index`` (0: the key) of an SSHSIG blob sits."""
    pos = 10
    for _ in range(index):
        pos += 4 + struct.unpack_from(">I", blob, pos)[0]
    return pos, struct.unpack_from(">I", blob, pos)[0]


def test_a_signature_ssh_keygen_style_parses_the_same() -> None:
    sig = _agree(GOOD)
    assert isinstance(sig, Signature) and sig.namespace == "git" and sig.hash_algorithm == "sha512"
    assert _agree(GOOD.encode()) == sig and _agree(bytearray(GOOD.encode())) == sig
    assert _agree("\n  " + GOOD + "\n\n") == sig  # blank space around the armor


@pytest.mark.parametrize(
    "text",
    [
        GOOD.replace("\n", "\r\n"),  # other line ends
        GOOD.replace("\n", " \n", 2),  # spaces at line ends
        GOOD.replace("\n", "\n\n", 2),  # an empty line inside
        GOOD.replace("-----END", "-----FIN"),
        GOOD.replace("-----BEGIN", "----BEGIN"),
        GOOD.replace("A", "\u00c4", 1),  # not ASCII
        GOOD.replace("A", "*", 1),  # not base64
        GOOD.replace("\n-----END", "==\n-----END"),
        "-----BEGIN SSH SIGNATURE-----\n-----END SSH SIGNATURE-----\n",
        "-----BEGIN SSH SIGNATURE-----\n\n-----END SSH SIGNATURE-----\n",
        "-----BEGIN SSH SIGNATURE-----\n",
        "",
        GOOD[:MAX_ARMOR] + "A" * MAX_ARMOR,
    ],
)
def test_hostile_armor_is_refused_the_same(text: str) -> None:
    _agree(text)


def test_every_field_length_and_cut_is_judged_the_same() -> None:
    for index in range(5):
        pos, size = _field(BLOB, index)
        for delta in (-5, -1, 1, 7, 1 << 31):
            length = max(size + delta, 0) & 0xFFFFFFFF
            if length == size:
                continue
            forged = BLOB[:pos] + struct.pack(">I", length) + BLOB[pos + 4 :]
            assert isinstance(_agree(armor(forged)), str)
    for cut in range(len(BLOB)):
        assert isinstance(_agree(armor(BLOB[:cut])), str)
    assert isinstance(_agree(armor(BLOB + b"\0")), str)  # trailing bytes


def test_odd_field_values_are_judged_the_same() -> None:
    def swap(index: int, value: bytes) -> bytes:
        pos, size = _field(BLOB, index)
        return BLOB[:pos] + struct.pack(">I", len(value)) + value + BLOB[pos + 4 + size :]

    cases = [
        swap(1, b""),  # empty namespace
        swap(1, b"g\xffit"),  # not ASCII
        swap(1, b"n" * 300),  # longer than allowed
        swap(2, b"reserved"),
        swap(3, b"md5"),
        swap(3, b"h" * 300),
        swap(4, b"\0\0\0\x0bssh-ed25519\0\0\0\x01x"),  # a short inner signature (still parses)
        swap(4, b"\0\0\x01\x2c" + b"t" * 300 + b"\0\0\0\0"),  # an over-long signature type
        swap(4, b"\0\0\0\x03\xff\xfe\xfd\0\0\0\0"),
        swap(4, b"\0\0\0\x01"),
        swap(0, b"\0\0\0\x07ssh-dss\0\0\0\0"),  # an unsupported key
        BLOB[:6] + b"\0\0\0\x02" + BLOB[10:],  # another version
        b"SSHSIX" + BLOB[6:],
    ]
    for blob in cases:
        _agree(armor(blob))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(at=st.integers(0, len(BLOB) - 1), byte=st.integers(0, 255), cut=st.integers(0, 8))
def test_any_flipped_byte_is_judged_the_same(at: int, byte: int, cut: int) -> None:
    forged = BLOB[:at] + bytes([byte]) + BLOB[at + 1 :]
    _agree(armor(forged))
    _agree(armor(forged)[: len(GOOD) - cut])
    b64 = base64.b64encode(forged).decode()
    _agree(f"-----BEGIN SSH SIGNATURE-----\n{b64}\n-----END SSH SIGNATURE-----")
