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
