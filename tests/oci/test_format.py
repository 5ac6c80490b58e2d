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
        (lambda d: d["annotations"].__setitem__(mp.ANN_FORMAT, "3"), UsageError, "newer uniflow"),
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
