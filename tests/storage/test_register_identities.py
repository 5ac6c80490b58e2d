"""A register's chunks and identities are a pure function of the file's bytes, fixed forever:
the same input must give the same cut points, chunk names, file identity and tensor
identities whatever the pipeline that computes them (a changed cut breaks dedup with every
existing store). The expected values were computed by the code of 2026-12-07 (format 3);
the tensor file's on 2026-12-07 again, when the rule for tensor files changed before format
3 was first released (large regions cut every ``TENSOR_STEP`` bytes, a short run at the
file's end its own chunk: ``_storage.cutting``). An opaque file's have never changed."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import blake3
import pytest

from uniflow._records.tensors import scan_for
from uniflow._storage.store import ObjectStore

MIB = 1 << 20


def _bytes(seed: str, n: int) -> bytes:
    return blake3.blake3(seed.encode()).digest(length=n)


def _safetensors(path: Path) -> None:
    """A header, large tensors split by small ones (glued), a run of small ones (grouped)."""
    sizes = [3 * MIB + 12, 4_000, 5 * MIB + 333, 16, 200_000, 120_000, 90_000, 300_000, 7 * MIB, 8]
    header, offset = {}, 0
    for i, n in enumerate(sizes):
        header[f"t{i}"] = {"dtype": "U8", "shape": [n], "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + _bytes("tensors", offset))


def _summary(store: ObjectStore, path: Path) -> dict[str, object]:
    rec = store.put_file(path, None, None, scan_for(path.name))
    chunks = blake3.blake3("".join(f"{c.digest}:{c.size}\n" for c in rec.chunks).encode()).hexdigest()
    return {
        "digest": rec.digest,
        "chunks": len(rec.chunks),
        "chunk_list": chunks,
        "tensors": list(rec.range_digests),
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("files")
    (d / "weights.bin").write_bytes(_bytes("opaque", 21 * MIB + 777))
    _safetensors(d / "model.safetensors")
    return {"opaque": d / "weights.bin", "tensors": d / "model.safetensors"}


#: what the code of 2026-12-07 gives for these files (the opaque file's: main at b6b5f26)
EXPECTED = {
    "opaque": {
        "digest": "4fc5a4e325d3b87e3b4a654e3e40f0c5ca2844fe80425ffb2aeb41bfa6fec728",
        "chunks": 17,
        "chunk_list": "37cbb304bc75356d679d6ee7d70318089dd48ca159a5d711f47ea0d3e62d1903",
        "tensors": [],
    },
    "tensors": {
        "digest": "d574d4bbc1599d2e15e785ce78b5a44963c1b93902d0a2a40b06a621fd0c54b9",
        "chunks": 18,
        "chunk_list": "9055f625c92c1242c0dc6db2e03b69b0d37a4da76a591691bc2c27c154138a3d",
        "tensors": [
            "ee216b7fdcb224d063510fde4b344edf94365ce0fb17cd9c3d5caae74b8e129b",
            "d481d2355fc467e273bbf7b5b704ef26257f35dca3aa45cc9fdfd6ae17a8f7f8",
            "10936b9f51a3605c5c313991dddfa9ce4f9498c9150236dbf368ef169a57092a",
            "cb4611268ff412bf17d0b92ea767e6cc53fff0c3339de90e13ff61fe9c6ceddc",
            "6b1ed28d2b2b78487eee9ae73c3c1cc802f1fd755b4be4aa670035d73b19082e",
            "b630a008a30f5dd7375c15f22ecbaedcf0d6bd6cba1df16ceb6892210e976393",
            "f04f7b5b8bbccd901d670e5896c19668ecc17a5b7998795385f8bda20409d1f5",
            "104ac44574075045347cca27496a8d28551f3b9fedd35ae9f4f210bde5a79ced",
            "c8cdfda0ff4ac980a11a88e5b1d8fc450ff68c1041a25d8f74efb21e98c07bd9",
            "31f509067f7085521399b7a7b7fee56225e9ed7318fbf675d11e36fa5613db23",
        ],
    },
}


@pytest.mark.parametrize("kind", ["opaque", "tensors"])
def test_the_same_bytes_give_the_same_chunks_and_identities(
    files: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    store = ObjectStore(tmp_path / "store")
    assert _summary(store, files[kind]) == EXPECTED[kind]
    again = _summary(store, files[kind])  # every chunk found in the packs just written
    assert again == EXPECTED[kind] and len(list((tmp_path / "store" / "packs").glob("*.pack"))) == 1
    rec = store.put_file(files[kind], None, None, scan_for(files[kind].name))
    assert b"".join(store.read_chunk(c) for c in rec.chunks) == files[kind].read_bytes()
