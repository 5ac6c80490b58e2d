"""The ModelPack format as uniflow writes it, and the gate of what a registry returns
(no registry needed): ``oci://`` references, layer kinds, a manifest and config that
round-trip, and the refusals of ``parse_manifest`` and ``check_config``."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from uniflow._errors import IntegrityError, UsageError
from uniflow._records.manifest import content_digest
from uniflow.oci import modelpack as mp
from uniflow.oci.ref import OciRef, parse_oci_ref


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("oci://127.0.0.1:5000/models/clf:v1.0.0", OciRef("127.0.0.1:5000", "models/clf", "v1.0.0")),
        ("oci://ghcr.io/team/ml/clf:prod", OciRef("ghcr.io", "team/ml/clf", "prod")),
        ("oci://localhost/clf", OciRef("localhost", "clf")),
        ("OCI://[::1]:5000/a.b/c__d-e:t", OciRef("[::1]:5000", "a.b/c__d-e", "t")),
        (f"oci://r.io/clf@sha256:{'a' * 64}", OciRef("r.io", "clf", None, f"sha256:{'a' * 64}")),
    ],
)
def test_references_parse(text: str, want: OciRef) -> None:
    assert parse_oci_ref(text) == want
    assert str(want).lower().endswith(text.lower().removeprefix("oci://"))


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("s3://bucket/clf", "unknown scheme 's3://'"),
        ("https://r.io/clf:v1", "unknown scheme 'https://'"),
        ("r.io/clf:v1", "is not an OCI reference"),
        ("oci://r.io/Clf:v1", "not a valid OCI reference"),  # upper case is no repository name
        ("oci://r.io/clf:v1/x", "not a valid OCI reference"),
        ("oci://r.io/../clf", "not a valid OCI reference"),
        ("oci://r.io/clf@sha256:abc", "not a valid OCI reference"),
        ("oci://r.io:99999/clf:v1", "port 99999 is out of range"),
        ("oci://r.io", "not a valid OCI reference"),
    ],
)
def test_bad_references_are_one_usage_error(text: str, words: str) -> None:
    with pytest.raises(UsageError, match=words.replace("(", r"\(").replace(".", r"\.")):
        parse_oci_ref(text)


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("model.safetensors", mp.WEIGHT_RAW),
        ("sub/pytorch_model.bin", mp.WEIGHT_RAW),
        ("model.onnx", mp.WEIGHT_RAW),
        ("config.json", mp.WEIGHT_CONFIG_RAW),
        ("tokenizer/merges.txt", mp.WEIGHT_CONFIG_RAW),
        ("README.md", mp.DOC_RAW),
        ("LICENSE", mp.DOC_RAW),
        ("serve.py", mp.CODE_RAW),
    ],
)
def test_each_file_gets_a_raw_modelpack_layer_kind(path: str, kind: str) -> None:
    assert mp.layer_media_type(path) == kind


FILES = {"model.safetensors": b"w" * 100, "config.json": b"{}", "bin/run.sh": b"#!/bin/sh\n"}


def _artifact(files: dict[str, bytes] = FILES) -> tuple[bytes, bytes, list[mp.LayerFile]]:
    import blake3

    layers = [
        mp.LayerFile(
            path,
            len(data),
            0o755 if path.endswith(".sh") else 0o644,
            blake3.blake3(data).hexdigest(),
            "sha256:" + hashlib.sha256(data).hexdigest(),
            mp.layer_media_type(path),
        )
        for path, data in sorted(files.items())
    ]
    rows = [{"path": f.path, "mode": f.mode, "digest": f.blake3} for f in layers]
    info = mp.VersionInfo(
        "clf", "v1.0.0", content_digest(rows), "2026-01-01T00:00:00+00:00", "production", "pytorch", "torch",
        "a" * 40, "Ann <ann@example.com>", "a model", {"acc": 0.5},
    )  # fmt: skip
    config = mp.build_config(info, layers)
    body = mp.build_manifest(info, layers, config, "sha256:" + hashlib.sha256(config).hexdigest())
    return body, config, layers


def test_manifest_and_config_round_trip_through_the_gate() -> None:
    body, config, layers = _artifact()
    art = mp.parse_manifest(body, "oci://r/clf:v1")
    assert art.layers == tuple(layers)
    assert (art.info.name, art.info.version, art.info.stage, art.info.metrics) == (
        "clf",
        "v1.0.0",
        "production",
        {"acc": 0.5},
    )
    assert art.config_digest == "sha256:" + hashlib.sha256(config).hexdigest()
    mp.check_config(config, art, "oci://r/clf:v1")
    doc = json.loads(config)
    assert doc["config"] == {"format": "safetensors"}  # the torch serializer's files
    assert doc["descriptor"]["revision"] == "a" * 40 and doc["descriptor"]["authors"] == [
        "Ann <ann@example.com>"
    ]
    assert set(doc) == {"descriptor", "config", "modelfs"}  # ModelPack's schema has no other keys
    assert body == mp.build_manifest(art.info, art.layers, config, art.config_digest)  # deterministic


def _edit(body: bytes, change: Any) -> bytes:
    doc = json.loads(body)
    change(doc)
    return json.dumps(doc).encode()


def _layer_ann(i: int, key: str, value: str) -> Any:
    return lambda d: d["layers"][i]["annotations"].__setitem__(key, value)


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        (lambda d: d.__setitem__("schemaVersion", 1), IntegrityError, "schemaVersion 2"),
        (lambda d: d.__setitem__("mediaType", mp.INDEX_MEDIA_TYPE), UsageError, "image index"),
        (
            lambda d: d["config"].__setitem__("mediaType", "application/vnd.oci.image.config.v1+json"),
            UsageError,
            "not a ModelPack model artifact",
        ),
        (lambda d: d["annotations"].pop(mp.ANN_FORMAT), UsageError, "uniflow did not push"),
        (
            lambda d: d["layers"][0].__setitem__("mediaType", mp.WEIGHT_RAW[:-3] + "tar"),
            UsageError,
            "unarchived",
        ),
        (_layer_ann(0, mp.ANN_FILEPATH, "/etc/passwd"), IntegrityError, "invalid file path"),
        (_layer_ann(0, mp.ANN_FILEPATH, ".git/config"), IntegrityError, ".git"),
        (_layer_ann(0, mp.ANN_FILEPATH, "config.json"), IntegrityError, "appears twice"),
        (_layer_ann(1, mp.ANN_FILEPATH, "bin/run.sh/x"), IntegrityError, "also a directory"),
        (
            _layer_ann(0, mp.ANN_FILE_METADATA, '{"mode": 2541, "size": 10}'),
            IntegrityError,
            "mode 420 or 493",
        ),
        (_layer_ann(0, mp.ANN_FILE_BLAKE3, "nothex"), IntegrityError, "64 hex"),
        (lambda d: d["layers"][0].__setitem__("digest", "md5:abc"), IntegrityError, "sha256"),
        (lambda d: d["layers"][0].__setitem__("size", -1), IntegrityError, "size"),
        (lambda d: d.__setitem__("layers", []), IntegrityError, "no layers"),
        (
            lambda d: d["annotations"].__setitem__(mp.ANN_NAME, "../x"),
            IntegrityError,
            "invalid model artifact",
        ),
        (lambda d: d["annotations"].__setitem__(mp.ANN_METRICS, "[1]"), IntegrityError, "JSON object"),
        (lambda d: d["config"].__setitem__("size", 5 << 20), IntegrityError, "the config is"),
    ],
)
def test_the_gate_refuses_with_one_line(change: Any, error: type[Exception], words: str) -> None:
    body, _, _ = _artifact()
    with pytest.raises(error) as info:
        mp.parse_manifest(_edit(body, change), "oci://r/clf:v1")
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_config_that_disagrees_with_the_manifest_is_refused() -> None:
    body, config, _ = _artifact()
    art = mp.parse_manifest(body, "w")
    for change, words in [
        (lambda d: d["descriptor"].__setitem__("version", "v2.0.0"), "another model or version"),
        (lambda d: d["modelfs"]["diffIds"].reverse(), "diffIds"),
        (lambda d: d.pop("modelfs"), "no descriptor or modelfs"),
    ]:
        with pytest.raises(IntegrityError, match=words):
            mp.check_config(_edit(config, change), art, "w")
    with pytest.raises(IntegrityError):
        mp.parse_manifest(b"[" * 100_000, "w")  # bounded decoding


# ---------------------------------------------------------------- format-3 versions
#: a format-3 version: model.safetensors is cut into 4 chunks of 64 KiB (the last shorter)
MERKLE_FILES = {**FILES, "model.safetensors": bytes(range(256)) * 781 + b"w" * 64}


def _merkle_layers(files: dict[str, bytes], cut: int = 64 << 10) -> list[mp.LayerFile]:
    """Layers of a format-3 version: each file cut into chunks of ``cut`` bytes (the last
    shorter), its identity the Merkle identity of those chunks."""
    import blake3

    from uniflow._storage.merkle import merkle_identity

    layers = []
    for path, data in sorted(files.items()):
        pieces = [data[i : i + cut] for i in range(0, len(data), cut)]
        identity = merkle_identity((blake3.blake3(p).digest(), len(p)) for p in pieces)
        layers.append(
            mp.LayerFile(
                path,
                len(data),
                0o755 if path.endswith(".sh") else 0o644,
                blake3.blake3(data).hexdigest(),
                "sha256:" + hashlib.sha256(data).hexdigest(),
                mp.layer_media_type(path),
                identity,
                tuple(len(p) for p in pieces),
            )
        )
    return layers


def _merkle_artifact(layers: list[mp.LayerFile] | None = None) -> bytes:
    layers = _merkle_layers(MERKLE_FILES) if layers is None else layers
    rows = [{"path": f.path, "mode": f.mode, "digest": f.identity} for f in layers]
    info = mp.VersionInfo("clf", "v1.0.0", content_digest(rows))
    config = mp.build_config(info, layers)
    return mp.build_manifest(info, layers, config, "sha256:" + hashlib.sha256(config).hexdigest())


def test_a_format3_version_round_trips_with_identities_and_chunk_sizes() -> None:
    """Layout 2: each layer carries its identity and chunk sizes, the BLAKE3 annotation is
    the b3sum of its bytes, and the content digest is computed over the identities."""
    layers = _merkle_layers(MERKLE_FILES)
    body = _merkle_artifact(layers)
    doc = json.loads(body)
    assert doc["annotations"][mp.ANN_FORMAT] == mp.FORMAT_MERKLE
    ann = {layer["annotations"][mp.ANN_FILEPATH]: layer["annotations"] for layer in doc["layers"]}
    assert ann["model.safetensors"][mp.ANN_FILE_CHUNKS] == "65536,65536,65536,3392"
    assert ann["config.json"][mp.ANN_FILE_CHUNKS] == "2"
    art = mp.parse_manifest(body, "w")
    assert art.layers == tuple(layers)
    assert [f.file_digest for f in art.layers] == [f.identity for f in layers]
    # a format 1/2 version keeps layout 1 and no identity annotations
    old = json.loads(_artifact()[0])
    assert old["annotations"][mp.ANN_FORMAT] == mp.FORMAT
    assert all(mp.ANN_FILE_DIGEST not in layer["annotations"] for layer in old["layers"])


def _chunks(i: int, value: str) -> Any:
    return _layer_ann(i, mp.ANN_FILE_CHUNKS, value)


def _drop(i: int, key: str) -> Any:
    return lambda d: d["layers"][i]["annotations"].pop(key)


@pytest.mark.parametrize(
    ("change", "error", "words"),
    [
        (_layer_ann(0, mp.ANN_FILE_DIGEST, "0" * 64), IntegrityError, "content digest annotation"),
        (_drop(0, mp.ANN_FILE_DIGEST), IntegrityError, "no org.uniflow.file.digest"),
        (_drop(0, mp.ANN_FILE_CHUNKS), IntegrityError, "no org.uniflow.file.chunks"),
        (_chunks(0, "10,"), IntegrityError, "not comma-separated chunk sizes"),
        (_chunks(0, "10\n"), IntegrityError, "not comma-separated chunk sizes"),
        (_chunks(0, "010"), IntegrityError, "not comma-separated chunk sizes"),
        (_chunks(0, "+10"), IntegrityError, "not comma-separated chunk sizes"),
        (_chunks(0, "11"), IntegrityError, "do not cut its 10 bytes into chunks"),
        (_chunks(0, ""), IntegrityError, "do not cut its 10 bytes"),
        (_chunks(2, "65536,65536,65536,3391"), IntegrityError, "do not cut its 200000"),
        (_chunks(2, "1,1,1,1,199996"), IntegrityError, "do not cut its 200000"),
        (_chunks(2, "67108865"), IntegrityError, "do not cut its 200000"),
        (lambda d: d["annotations"].__setitem__(mp.ANN_FORMAT, "1"), IntegrityError, "in an artifact of"),
        (lambda d: d["annotations"].__setitem__(mp.ANN_FORMAT, "4"), UsageError, "newer uniflow"),
        (
            lambda d: d["annotations"].__setitem__(mp.ANN_FORMAT, mp.FORMAT_CHUNK_LIST),
            IntegrityError,
            "is not its chunk list",
        ),
    ],
)
def test_the_gate_refuses_bad_identities_and_chunk_sizes(
    change: Any, error: type[Exception], words: str
) -> None:
    with pytest.raises(error) as info:
        mp.parse_manifest(_edit(_merkle_artifact(), change), "oci://r/clf:v1")
    assert words in str(info.value) and "\n" not in str(info.value)


def test_an_oversized_chunk_sizes_annotation_is_refused_before_it_is_split() -> None:
    """A layer of S bytes has at most 1 + (S - 1) // 64 KiB chunks of at most 8 digits: a
    longer annotation is refused by its length, without splitting or parsing it (here 180 KB
    of text for a file of 10 bytes)."""
    huge = "65536," * 30_000 + "10"
    body = _edit(_merkle_artifact(), _layer_ann(0, mp.ANN_FILE_CHUNKS, huge))
    assert len(body) < mp.MAX_MANIFEST_BYTES
    with pytest.raises(IntegrityError) as info:
        mp.parse_manifest(body, "w")
    assert (
        f"{mp.ANN_FILE_CHUNKS} is {len(huge)} characters, more than 10 bytes of chunks can take (9)"
        in str(info.value)
    )


def test_layer_hashes_check_the_bytes_against_the_chunk_sizes() -> None:
    """LayerHashes, fed in pieces that straddle chunk boundaries, gives the identity of the
    chunks the sizes cut, and no identity when the bytes and the sizes disagree."""
    import random

    data = random.Random(3).randbytes(1000)
    (layer,) = _merkle_layers({"w.bin": data}, cut=300)
    for step in (1, 7, 299, 300, 301, 1000):
        hashes = mp.LayerHashes(layer.chunks)
        for i in range(0, len(data), step):
            hashes.update(data[i : i + step])
        assert (hashes.identity(), hashes.b3sum(), hashes.sha256()) == (
            layer.identity,
            layer.blake3,
            layer.digest,
        )
    for sizes, fed in [((300, 300, 400), data), ((300, 300, 300), data), (layer.chunks, data[:-1])]:
        hashes = mp.LayerHashes(sizes)
        hashes.update(fed)
        assert hashes.identity() != layer.identity
    assert mp.LayerHashes().identity() is None


def test_a_manifest_registries_would_refuse_is_refused_when_built() -> None:
    """The chunk sizes cost about 8 bytes per MiB of file (1 MiB average chunks): a 20 GiB
    version fits the 4 MiB manifest bound even with every chunk the chunker's 256 KiB
    minimum, and passes the gate of a pull (its decoding budget included); a version of
    200 GiB in such chunks does not fit, and is refused with one line."""
    rows = [{"path": "w.bin", "mode": 0o644, "digest": "1" * 64}]
    info = mp.VersionInfo("clf", "v1.0.0", content_digest(rows))

    def layers(total: int, chunk: int) -> list[mp.LayerFile]:
        n = total // chunk
        return [
            mp.LayerFile(
                "w.bin",
                n * chunk,
                0o644,
                "0" * 64,
                "sha256:" + "0" * 64,
                mp.WEIGHT_RAW,
                "1" * 64,
                (chunk,) * n,
            )
        ]

    for chunk in (1 << 20, 256 << 10):
        fits = layers(20 << 30, chunk)
        body = mp.build_manifest(info, fits, b"{}", "sha256:" + "0" * 64)
        assert len(body) < mp.MAX_MANIFEST_BYTES
        assert mp.parse_manifest(body, "w").layers == tuple(fits)
    with pytest.raises(UsageError) as refused:
        mp.build_manifest(info, layers(200 << 30, 256 << 10), b"{}", "sha256:" + "0" * 64)
    assert "does not fit one OCI manifest" in str(refused.value) and "\n" not in str(refused.value)


# ---------------------------------------------------------------- layout 3: the chunk list
def test_small_versions_keep_their_manifest_bytes() -> None:
    """A version whose chunk sizes fit the layer annotations is written as uniflow wrote it
    before the chunk list existed: the same manifest bytes, so the same manifest digest (these
    digests were computed by that uniflow), and no chunk list is planned."""
    assert hashlib.sha256(_artifact()[0]).hexdigest() == (
        "57b7880599d05c89c62a306ec061b383332d1bf56b33e1cc9fe324129a74c0c2"
    )
    assert hashlib.sha256(_merkle_artifact()).hexdigest() == (
        "9ed556d21699775859cca91d733fef720a7b9a814c83eab92c7fe12c38450e68"
    )
    layers = _merkle_layers(MERKLE_FILES)
    rows = [{"path": f.path, "mode": f.mode, "digest": f.identity} for f in layers]
    assert mp.plan_chunk_list(mp.VersionInfo("clf", "v1.0.0", content_digest(rows)), layers) is None


def _big(total: int, chunk: int, path: str = "w.bin") -> mp.LayerFile:
    """A layer of ``total`` bytes in chunks of ``chunk`` bytes (digests made up: the gate does
    not see bytes)."""
    n = total // chunk
    ident = hashlib.sha256(path.encode()).hexdigest()
    return mp.LayerFile(
        path, n * chunk, 0o644, "0" * 64, "sha256:" + "1" * 64, mp.WEIGHT_RAW, ident, (chunk,) * n
    )


def _layout3(layers: list[mp.LayerFile]) -> tuple[bytes, bytes, bytes, mp.VersionInfo]:
    """The manifest, config and chunk list of ``layers`` as a push plans them."""
    rows = [{"path": f.path, "mode": f.mode, "digest": f.identity} for f in layers]
    info = mp.VersionInfo("clf", "v1.0.0", content_digest(rows))
    blob = mp.plan_chunk_list(info, layers)
    assert blob is not None
    config = mp.build_config(info, layers, blob)
    body = mp.build_manifest(info, layers, config, "sha256:" + hashlib.sha256(config).hexdigest(), blob)
    return body, config, blob, info


def test_a_version_too_large_for_annotations_moves_its_chunk_sizes_into_a_chunk_list() -> None:
    """200 GiB in chunks of the chunker's 256 KiB minimum did not fit one manifest (800 000
    chunk sizes in annotations); planned, the chunk sizes go into one chunk-list blob of 4
    bytes per chunk, the manifest stays a few KiB, and the gate and the chunk list give back
    every layer with its identity and chunk sizes."""
    layers = [_big(200 << 30, 256 << 10), _big(1 << 20, 1 << 20, "config.json")]
    body, config, blob, _ = _layout3(layers)
    assert len(body) < 4096 and len(blob) == 12 + 2 * 36 + 4 * (800 * 1024 + 1)
    doc = json.loads(body)
    assert doc["annotations"][mp.ANN_FORMAT] == mp.FORMAT_CHUNK_LIST
    last = doc["layers"][-1]
    assert last == {
        "mediaType": mp.CHUNK_LIST_MEDIA_TYPE,
        "digest": "sha256:" + hashlib.sha256(blob).hexdigest(),
        "size": len(blob),
    }  # no file path, no title: no tool takes it for a file of the model
    for layer in doc["layers"][:-1]:
        assert mp.ANN_FILE_CHUNKS not in layer["annotations"]
        assert layer["annotations"][mp.ANN_FILE_DIGEST]
    assert json.loads(config)["modelfs"]["diffIds"][-1] == last["digest"]
    art = mp.parse_manifest(body, "w")
    assert art.chunk_list == mp.BlobRef(last["digest"], len(blob))
    assert all(f.chunks is None for f in art.layers)  # not usable before the chunk list is read
    mp.check_config(config, art, "w")
    full = mp.attach_chunk_list(art, blob, "w")
    assert sorted(full.layers, key=lambda f: f.path) == sorted(layers, key=lambda f: f.path)


def test_the_inline_bound_decides_the_layout_and_a_version_fitting_no_layout_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    layers = _merkle_layers(MERKLE_FILES)
    rows = [{"path": f.path, "mode": f.mode, "digest": f.identity} for f in layers]
    info = mp.VersionInfo("clf", "v1.0.0", content_digest(rows))
    monkeypatch.setattr(mp, "MAX_INLINE_MANIFEST_BYTES", 1000)
    blob = mp.plan_chunk_list(info, layers)
    assert blob == mp.encode_chunk_list(layers)
    monkeypatch.setattr(mp, "MAX_INLINE_MANIFEST_BYTES", 5)  # fewer bytes than 3 chunk sizes take
    assert mp.plan_chunk_list(info, layers) == blob
    monkeypatch.setattr(mp, "MAX_CHUNK_LIST_BYTES", len(blob) - 1)
    with pytest.raises(UsageError) as refused:
        mp.plan_chunk_list(info, layers)
    assert "too many chunks for an OCI artifact" in str(refused.value)
    # a layout-1 version (no identities) never has a chunk list
    assert mp.plan_chunk_list(info, _artifact()[2]) is None


def _entry(identity: str, sizes: list[int]) -> bytes:
    import struct

    return bytes.fromhex(identity) + struct.pack(f"<I{len(sizes)}I", len(sizes), *sizes)


def _list(*entries: bytes, count: int | None = None) -> bytes:
    import struct

    return b"UFCHUNK1" + struct.pack("<I", len(entries) if count is None else count) + b"".join(entries)


#: a version whose 1 MiB file is cut into 2 chunks of 512 KiB: its chunk list may hold up to
#: 14 more sizes than it does (a file of 1 MiB may have 16 chunks of 64 KiB), room for a forgery
#: within the size the gate allows
FORGE_FILES = {"w.bin": bytes(range(256)) * 4096, "config.json": b"{}", "a.txt": b"x"}


def _forge_layers() -> list[mp.LayerFile]:
    return _merkle_layers(FORGE_FILES, cut=512 << 10)


def _with_blob(blob: bytes) -> mp.Artifact:
    """The layout-3 artifact of FORGE_FILES whose manifest names ``blob`` as its chunk list
    (so that the descriptor matches, and the decoding itself is what is tested)."""
    return mp.parse_manifest(_layout3_with(_forge_layers(), blob), "w")


def _layout3_with(layers: list[mp.LayerFile], blob: bytes) -> bytes:
    rows = [{"path": f.path, "mode": f.mode, "digest": f.identity} for f in layers]
    info = mp.VersionInfo("clf", "v1.0.0", content_digest(rows))
    config = mp.build_config(info, layers, blob)
    return mp.build_manifest(info, layers, config, "sha256:" + hashlib.sha256(config).hexdigest(), blob)


def _forged_lists() -> list[tuple[bytes, str]]:
    by_id = {f.identity: f for f in _forge_layers()}
    ids = sorted(i for i in by_id if i)
    good = [_entry(i, list(by_id[i].chunks or ())) for i in ids]
    big = next(i for i in ids if by_id[i].size == 1 << 20)
    rest = [g for i, g in zip(ids, good, strict=True) if i != big]
    short, zero = [512 << 10, (512 << 10) - 1], [0, 512 << 10, 512 << 10]
    return [
        (_list(good[0], *good), "names identity " + ids[0] + " twice"),
        (_list(good[1], good[0], *good[2:]), "is not in order"),
        (_list(*sorted([_entry(big, short), *rest])), "do not cut its 1048576 bytes"),
        (_list(*sorted([_entry(big, zero), *rest])), "do not cut its 1048576 bytes"),
        (_list(*sorted([*good[1:], _entry("f" * 64, [1])])), "has no chunk sizes for layer"),
        (_list(*good, _entry("f" * 64, [1])), "which no layer has"),
        (_list(*good) + b"\0", "bytes after its last entry"),
        (_list(*good, count=len(good) + 1), "ends inside an entry"),
        (_list(*good)[:-2], "ends inside the sizes"),
        (b"NOTCHUNK" + _list(*good)[8:], "not a uniflow chunk list"),
    ]


@pytest.mark.parametrize(("blob", "words"), _forged_lists(), ids=[w[:24] for _, w in _forged_lists()])
def test_a_forged_chunk_list_is_refused_with_one_line(blob: bytes, words: str) -> None:
    art = _with_blob(blob)
    with pytest.raises(IntegrityError) as info:
        mp.attach_chunk_list(art, blob, "w")
    assert words in str(info.value) and "\n" not in str(info.value)


def test_a_chunk_list_is_checked_against_its_descriptor_and_bounded_before_it_is_read() -> None:
    layers = _merkle_layers(MERKLE_FILES)
    blob = mp.encode_chunk_list(layers)
    art = mp.parse_manifest(_layout3_with(layers, blob), "w")
    for other in (blob[:-1] + b"\1", blob + b"\0"):
        with pytest.raises(IntegrityError, match="does not match its descriptor"):
            mp.attach_chunk_list(art, other, "w")
    # a declared size above what the layers' sizes allow is refused by the gate, unread
    most = 12 + sum(36 + 4 * (1 + (f.size - 1) // (64 << 10)) for f in layers)
    least = 12 + sum(36 + 4 for f in layers)  # each file below 64 MiB: one chunk at least
    for size in (most + 1, least - 1, 1 << 40):
        words = f"declared {size} bytes; its files' sizes allow {least} to {most}"
        body = _edit(_layout3_with(layers, blob), lambda d, n=size: d["layers"][-1].__setitem__("size", n))
        with pytest.raises(IntegrityError, match=words):
            mp.parse_manifest(body, "w")
    # the chunk list must be the last layer, of its media type
    body = _edit(_layout3_with(layers, blob), lambda d: d["layers"].append(d["layers"].pop(0)))
    with pytest.raises(IntegrityError, match="last layer .* is not its chunk list"):
        mp.parse_manifest(body, "w")
    body = _edit(_layout3_with(layers, blob), lambda d: d["layers"].pop())
    with pytest.raises(IntegrityError, match="last layer .* is not its chunk list"):
        mp.parse_manifest(body, "w")
    # a file layer of layout 3 has no chunk sizes of its own (two sources would disagree)
    body = _edit(_layout3_with(layers, blob), _chunks(0, "1"))
    with pytest.raises(IntegrityError, match="its chunk sizes are in the chunk list"):
        mp.parse_manifest(body, "w")
