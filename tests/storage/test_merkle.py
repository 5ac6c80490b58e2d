"""Merkle identities (``_storage.merkle``): pinned vectors, Xet's tree, domain separation."""

from __future__ import annotations

import random

import blake3
import pytest

from uniflow._storage.merkle import (
    IDENTITY_KEY,
    IDENTITY_KEY_CONTEXT,
    NODE_KEY,
    NODE_KEY_CONTEXT,
    MerkleBuilder,
    _identity,
    _root,
    merkle_identity,
)


def name(i: int) -> str:
    return blake3.blake3(b"chunk %d" % i).hexdigest()


def chunks(n: int) -> list[tuple[str, int]]:
    return [(name(i), 1000 + i) for i in range(n)]


# Fixed inputs -> fixed outputs: a change to the encoding, the keys or the tree changes these.
PINNED = [
    (0, "0de333f3d162148ac3f4645acaf8b399a3b49042870750fd1c2cebabe622b157"),
    (1, "a6043f8279838229e81ec98c30bf2eee51e845dafcbf54a31489b7ae104c5312"),
    (3, "b443d508c196c99b69d2a44f8198c8d56df57fbcbd297c4c34a55783070db6ad"),
    (1000, "c82df785a5bab58d939a1083e79848a59f159f28e18812e1e00989508beab73d"),
]


@pytest.mark.parametrize(("n", "expected"), PINNED)
def test_pinned_vectors(n: int, expected: str) -> None:
    assert merkle_identity(chunks(n)) == expected


def test_keys_are_derived_as_documented() -> None:
    assert blake3.blake3(b"", derive_key_context=NODE_KEY_CONTEXT).digest() == NODE_KEY
    assert blake3.blake3(b"", derive_key_context=IDENTITY_KEY_CONTEXT).digest() == IDENTITY_KEY
    assert NODE_KEY != IDENTITY_KEY


def test_one_chunk_identity_is_defined_and_never_the_chunk_name() -> None:
    n = name(7)
    ident = merkle_identity([(n, 5)])
    assert ident != n
    # a single leaf is its own root (no node is hashed); the identity still commits to its size
    assert ident == blake3.blake3(bytes.fromhex(n) + (5).to_bytes(8, "little"), key=IDENTITY_KEY).hexdigest()
    assert merkle_identity([(n, 5)]) != merkle_identity([(n, 6)])


def test_empty_sequence_has_its_own_identity() -> None:
    assert merkle_identity([]) == blake3.blake3(b"", key=IDENTITY_KEY).hexdigest()
    assert merkle_identity([]) != blake3.blake3(b"").hexdigest()  # not the empty file's b3sum


@pytest.mark.parametrize("n", [1, 2, 3, 9, 10, 64, 300])
def test_any_name_size_or_order_change_changes_the_identity(n: int) -> None:
    base = chunks(n)
    ident = merkle_identity(base)
    seen = {ident}
    for i in range(n):
        renamed = list(base)
        renamed[i] = (name(10_000 + i), base[i][1])
        resized = list(base)
        resized[i] = (base[i][0], base[i][1] + 1)
        seen.add(merkle_identity(renamed))
        seen.add(merkle_identity(resized))
    swapped = list(base)
    swapped[0], swapped[-1] = swapped[-1], swapped[0]
    seen.add(merkle_identity(swapped))
    seen.add(merkle_identity(base[:-1]))
    seen.add(merkle_identity([*base, base[-1]]))
    assert len(seen) == 2 * n + 3 + (n > 1)  # with one chunk the swap changes nothing


def _batch_root(leaves: list[tuple[bytes, int]]) -> tuple[bytes, int] | None:
    """The documented definition, level by level, written independently of the module."""
    if not leaves:
        return None
    level = leaves
    while len(level) > 1:
        nxt, i = [], 0
        while i < len(level):
            rest = len(level) - i
            take = rest
            if rest > 2:
                end = min(rest, 9)
                take = next((j + 1 for j in range(2, end) if level[i + j][0][24] % 4 == 0), end)
            group = level[i : i + take]
            text = "".join(f"{h.hex()} : {s}\n" for h, s in group).encode()
            nxt.append((blake3.blake3(text, key=NODE_KEY).digest(), sum(s for _, s in group)))
            i += take
        level = nxt
    return level[0]


def test_streaming_matches_the_level_by_level_definition() -> None:
    rng = random.Random(25)
    for n in [*range(40), 81, 82, 500, 2049]:
        leaves = [(rng.randbytes(32), rng.randrange(1, 1 << 22)) for _ in range(n)]
        b = MerkleBuilder()
        for h, s in leaves:
            b.add(h, s)
        assert b.digest() == _identity(_batch_root(leaves)), n
        assert b.size == sum(s for _, s in leaves)


def test_builder_accepts_hex_or_raw_and_refuses_bad_leaves() -> None:
    a, b = MerkleBuilder(), MerkleBuilder()
    for h, s in chunks(20):
        a.add(h, s)
        b.add(bytes.fromhex(h), s)
    assert a.hexdigest() == b.hexdigest() == merkle_identity(chunks(20))
    with pytest.raises(RuntimeError):
        a.add(name(1), 1)
    with pytest.raises(ValueError):
        MerkleBuilder().add(b"short", 1)
    with pytest.raises(ValueError):
        MerkleBuilder().add(name(1), -1)


# Hugging Face xet-core's reference values (merklehash aggregated_hashes tests): with Xet's node
# key and Xet's hex rendering, the same tree code gives Xet's node hashes and file hash.
XET_NODE_KEY = bytes([1, 126, 197, 199, 165, 71, 41, 150, 253, 148, 102, 102, 180, 138, 2, 230,
                      93, 221, 83, 111, 55, 199, 109, 210, 248, 99, 82, 230, 74, 83, 113, 63])  # fmt: skip
XET = [
    "0000000000000000000000000000000000000000000000000000000000000000",
    "cfc5d07f6f03c29bbf424132963fe08d19a37d5757aaf520bf08119f05cd56d6",
    "c3e67584b5c4fc2a89837ec39e40f2c8a6bb0b2987ac94cd4b31e5fbdd210a72",
    "0d2beb91b9196929a5ddec9f6e306924ddf4a24268e3e59fd8464738d525af37",
    "adf8773496a9b7319b2e50dc98093f344053b17d8ad37100b9c07d9805988784",
    "4ac202caf347fc1e9c874b1ef6a1c5e619141eb775a6f43f0f0124ccd0060d9e",
    "b3b28636f65c149ea52eb1f94669466f70f033b54cea792824c696ba6ef3c389",
    "0e2c1a002aae913d2c0fc8ddfa4e9e14b7b311b3b0d458726d5d9f6a6318013c",
]


def _xet_raw(text: str) -> bytes:  # Xet prints each 64-bit little-endian word as a number
    return b"".join(bytes.fromhex(text[i : i + 16])[::-1] for i in range(0, 64, 16))


def _xet_hex(raw: bytes) -> str:
    return "".join(raw[i : i + 8][::-1].hex() for i in range(0, 32, 8))


@pytest.mark.parametrize(
    ("leaves", "root"),
    [
        ([(1, 100), (2, 200), (3, 300)], "71ec1275fca074724e2dd666921b3277c7cee603e4d025bcab2d4050015be2bc"),
        ([(1, 100)] * 32, "0a0123c1617921883b7e13902095fcb86676e77c49120c33b233003b0af0e0a6"),
        ([(i % 8, (i % 8) * 100) for i in range(64)],
         "6554007c9b5d0a5e7918f79596a1b68815c1407535585435f5735db761f21b88"),
    ],
)  # fmt: skip
def test_tree_shape_and_node_encoding_are_xets(leaves: list[tuple[int, int]], root: str) -> None:
    got = _root([(_xet_raw(XET[i]), s) for i, s in leaves], XET_NODE_KEY, _xet_hex)
    assert got is not None and _xet_hex(got[0]) == root
