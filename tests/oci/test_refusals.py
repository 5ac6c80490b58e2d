"""What ``uniflow oci pull`` refuses, each with one ``error:`` line and a non-zero exit, DEST
never created: a registry that cannot be reached or never answers (bounded by the timeouts),
a container image or an index where a model is expected, a ModelPack artifact uniflow did not
push, a path that would leave DEST, annotations that lie about the bytes."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import cli
from tests.oci.conftest import OciRegistry
from tests.test_network_bounds import BlackHole, refused_port

pytestmark = pytest.mark.slow  # network servers

#: short timeouts, so that a peer that never answers costs seconds
TIMEOUTS = {"UNIFLOW_OCI_CONNECT_TIMEOUT": "1", "UNIFLOW_OCI_READ_TIMEOUT": "2"}
#: what one command may take against a black hole (a hang fails the test by its timeout)
BOUND = 60


def _one_error(r: Any, *words: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture
def work(tmp_path: Path) -> Path:
    d = tmp_path / "work"
    d.mkdir()
    return d


def _client(reg: OciRegistry, repository: str) -> Any:
    from uniflow.oci.client import OciClient
    from uniflow.oci.ref import parse_oci_ref

    return OciClient(parse_oci_ref(reg.url(repository, "x")), plain_http=True)


def _put(client: Any, manifest: dict[str, Any], tag: str, blobs: tuple[bytes, ...] = ()) -> None:
    import io

    for blob in blobs:
        digest = "sha256:" + hashlib.sha256(blob).hexdigest()
        client.upload(digest, len(blob), io.BytesIO(blob))
    client.put_manifest(json.dumps(manifest).encode(), tag)


def test_a_registry_that_never_answers_or_refuses_ends_in_bounded_time(repo: Path, work: Path) -> None:
    (repo / "m.bin").write_bytes(b"weights")
    cli(repo, "models", "register", "m.bin", "-n", "clf", "-v", "v1.0.0")
    hole = BlackHole()
    try:
        for args in (
            ["oci", "pull", f"oci://127.0.0.1:{hole.port}/m/clf:v1", "d", "--plain-http"],
            ["oci", "push", "clf", "v1.0.0", f"oci://127.0.0.1:{hole.port}/m/clf:v1", "--plain-http"],
            ["get", f"oci://127.0.0.1:{hole.port}/m/clf:v1", "clf", "--plain-http"],
        ):
            r = cli(repo if args[1] == "push" else work, *args, code=9, env=TIMEOUTS, timeout=BOUND)
            _one_error(r, f"registry 127.0.0.1:{hole.port}", "no answer within 2s")
        assert hole.accepted  # it was reached, and never answered
    finally:
        hole.close()
    port = refused_port()
    r = cli(
        work, "oci", "pull", f"oci://127.0.0.1:{port}/m/clf:v1", "d", "--plain-http", code=9, timeout=BOUND
    )
    _one_error(r, f"registry 127.0.0.1:{port}", "Connection refused")
    bad = cli(
        work,
        "oci",
        "pull",
        f"oci://127.0.0.1:{port}/m/clf:v1",
        "d",
        code=2,
        env={"UNIFLOW_OCI_READ_TIMEOUT": "x"},
    )
    _one_error(bad, "UNIFLOW_OCI_READ_TIMEOUT")
    assert os.listdir(work) == []


def test_other_artifact_types_are_named_and_refused(oci_registry: OciRegistry, work: Path) -> None:
    client = _client(oci_registry, "other/things")
    image_config = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    image = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": "sha256:" + hashlib.sha256(image_config).hexdigest(),
            "size": len(image_config),
        },
        "layers": [],
    }
    _put(client, image, "image", (image_config,))
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}
    client.put_manifest(json.dumps(index).encode(), "index", "application/vnd.oci.image.index.v1+json")
    foreign = dict(image, artifactType="application/vnd.cncf.model.manifest.v1+json")
    foreign["config"] = dict(image["config"], mediaType="application/vnd.cncf.model.config.v1+json")
    _put(client, foreign, "foreign")
    client.close()
    url = oci_registry.url("other/things")
    r = cli(work, "oci", "pull", f"{url}:image", "d", "--plain-http", code=2)
    _one_error(r, "not a ModelPack model artifact", "application/vnd.oci.image.config.v1+json")
    r = cli(work, "oci", "pull", f"{url}:index", "d", "--plain-http", code=2)
    _one_error(r, "image index")
    r = cli(work, "oci", "pull", f"{url}:foreign", "d", "--plain-http", code=2)
    _one_error(r, "uniflow did not push")
    assert os.listdir(work) == []


def _pushed(
    repo: Path,
    reg: OciRegistry,
    repository: str,
    legacy: pytest.MonkeyPatch | None = None,
    weights: bytes = b"weights " * 1000,
) -> tuple[dict[str, Any], str]:
    """A version pushed to ``repository``: its manifest, and the repository's URL. With
    ``legacy``, the version is registered in manifest format 2 (BLAKE3 file digests)."""
    (repo / "model").mkdir()
    (repo / "model" / "w.bin").write_bytes(weights)
    (repo / "model" / "config.json").write_text("{}")
    if legacy is None:
        cli(repo, "models", "register", "model", "-n", "clf", "-v", "v1.0.0")
    else:
        from tests.legacy_formats import register_as
        from uniflow import ModelRegistry

        with ModelRegistry(repo) as registry:
            register_as(2, registry, legacy, str(repo / "model"), "clf", version="v1.0.0")
    url = reg.url(repository, "v1")
    cli(repo, "oci", "push", "clf", "v1.0.0", url, "--plain-http")
    client = _client(reg, repository)
    try:
        manifest = json.loads(client.get_manifest("v1", 1 << 20))
    finally:
        client.close()
    return manifest, reg.url(repository)


def _rows(manifest: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The content digest's rows of ``manifest``, each file's digest read from annotation ``key``."""
    return [
        {
            "path": layer["annotations"]["org.cncf.model.filepath"],
            "mode": json.loads(layer["annotations"]["org.cncf.model.file.metadata+json"])["mode"],
            "digest": layer["annotations"][key],
        }
        for layer in manifest["layers"]
    ]


@pytest.mark.parametrize(
    ("fmt", "key", "words"),
    [
        (2, "org.uniflow.file.blake3", "does not match its registered BLAKE3 digest"),
        (3, "org.uniflow.file.digest", "does not match its registered digest"),
    ],
)
def test_annotations_that_lie_are_refused(
    repo: Path,
    oci_registry: OciRegistry,
    work: Path,
    monkeypatch: pytest.MonkeyPatch,
    fmt: int,
    key: str,
    words: str,
) -> None:
    """``key``: the annotation the content digest covers (the BLAKE3 of the bytes in format 2,
    the Merkle identity in format 3); in the forged case, sha256 and BLAKE3 stay true."""
    from uniflow._records.manifest import content_digest

    repository = f"lies{fmt}/clf"
    manifest, url = _pushed(repo, oci_registry, repository, monkeypatch if fmt == 2 else None)
    real = manifest["annotations"]["org.uniflow.content-digest"]
    client = _client(oci_registry, repository)

    # a path that would leave DEST
    escape = json.loads(json.dumps(manifest))
    escape["layers"][0]["annotations"]["org.cncf.model.filepath"] = "../outside.bin"
    _put(client, escape, "escape")
    # a file digest annotation changed alone: the content digest no longer matches
    alone = json.loads(json.dumps(manifest))
    alone["layers"][0]["annotations"][key] = "0" * 64
    _put(client, alone, "alone")
    # changed with a content digest recomputed to match: the file's bytes do not
    forged = json.loads(json.dumps(alone))
    forged["annotations"]["org.uniflow.content-digest"] = "blake3:" + content_digest(_rows(forged, key))
    _put(client, forged, "forged")
    client.close()

    r = cli(work, "oci", "pull", f"{url}:escape", "d", "--plain-http", code=5)
    _one_error(r, "invalid file path", "../outside.bin")
    r = cli(work, "oci", "pull", f"{url}:alone", "d", "--plain-http", code=5)
    _one_error(r, "content digest annotation does not match")
    r = cli(work, "oci", "pull", f"{url}:forged", "d", "--plain-http", code=5)
    _one_error(r, words)
    r = cli(work, "oci", "pull", f"{url}:forged", "d", "--plain-http", "--content-digest", real, code=5)
    _one_error(r, "not the expected")
    assert os.listdir(work) == [] and not (work.parent / "outside.bin").exists()
    cli(work, "oci", "pull", f"{url}:v1", "d", "--plain-http", "--content-digest", real)  # the real one


def test_forged_chunk_sizes_are_refused(repo: Path, oci_registry: OciRegistry, work: Path) -> None:
    """A format-3 layer whose chunk sizes are rewritten (the identity, sha256 and BLAKE3 left
    true, so the gate passes) is refused once its bytes are hashed at those boundaries; with
    the identity forged to match them too, the content digest changes, so a pull pinned to the
    real one refuses it."""
    import random

    from uniflow._records.manifest import content_digest
    from uniflow._storage.merkle import merkle_identity

    weights = random.Random(11).randbytes(3 << 20)  # several chunks
    manifest, url = _pushed(repo, oci_registry, "sizes/clf", weights=weights)
    real = manifest["annotations"]["org.uniflow.content-digest"]
    ((i, layer),) = [(i, x) for i, x in enumerate(manifest["layers"]) if x["size"] == len(weights)]
    sizes = [int(n) for n in layer["annotations"]["org.uniflow.file.chunks"].split(",")]
    assert len(sizes) >= 2
    moved = [sizes[0] + 4096, sizes[1] - 4096, *sizes[2:]]  # one boundary moved, same total
    forged = json.loads(json.dumps(manifest))
    forged["layers"][i]["annotations"]["org.uniflow.file.chunks"] = ",".join(map(str, moved))
    # the identity those boundaries give, and the content digest recomputed over it
    consistent = json.loads(json.dumps(forged))
    offsets = [sum(moved[:k]) for k in range(len(moved))]
    leaves = [(_b3(weights[o : o + n]), n) for o, n in zip(offsets, moved, strict=True)]
    consistent["layers"][i]["annotations"]["org.uniflow.file.digest"] = merkle_identity(leaves)
    rows = _rows(consistent, "org.uniflow.file.digest")
    consistent["annotations"]["org.uniflow.content-digest"] = "blake3:" + content_digest(rows)
    client = _client(oci_registry, "sizes/clf")
    _put(client, forged, "forged")
    _put(client, consistent, "consistent")
    client.close()

    r = cli(work, "oci", "pull", f"{url}:forged", "d", "--plain-http", code=5)
    _one_error(r, "'w.bin'", "does not match its registered digest")
    r = cli(work, "oci", "pull", f"{url}:consistent", "d", "--plain-http", "--content-digest", real, code=5)
    _one_error(r, "not the expected")
    assert os.listdir(work) == []
    cli(work, "oci", "pull", f"{url}:v1", "d", "--plain-http", "--content-digest", real)  # the real one
    assert (work / "d" / "w.bin").read_bytes() == weights


def _b3(data: bytes) -> bytes:
    import blake3

    return blake3.blake3(data).digest()


class _Stalling:
    """An HTTP server on 127.0.0.1 in front of the registry: it relays every GET, except that
    a blob is answered with its headers and a first few bytes, then nothing (until closed)."""

    def __init__(self, upstream: str) -> None:
        import threading
        import urllib.request
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        release = threading.Event()
        self.release = release

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                req = urllib.request.Request(f"http://{upstream}{self.path}", headers=dict(self.headers))
                with urllib.request.urlopen(req, timeout=10) as up:
                    body, status, headers = up.read(), up.status, up.headers
                self.send_response(status)
                for key in ("Content-Type", "Docker-Content-Digest"):
                    if headers.get(key):
                        self.send_header(key, headers[key])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if "/blobs/" in self.path and len(body) > 4096:  # the layer of w.bin, not the config
                    self.wfile.write(body[:16])
                    self.wfile.flush()
                    release.wait(30)  # bounded: the test releases it when done
                    return
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def test_a_layer_that_stalls_midway_ends_in_bounded_time(
    repo: Path, oci_registry: OciRegistry, work: Path
) -> None:
    _pushed(repo, oci_registry, "stall/clf")
    proxy = _Stalling(oci_registry.host)
    try:
        url = f"oci://127.0.0.1:{proxy.port}/stall/clf:v1"
        r = cli(work, "oci", "pull", url, "d", "--plain-http", code=9, env=TIMEOUTS, timeout=BOUND)
        _one_error(r, "cannot read 'w.bin'", "no answer within 2s")
    finally:
        proxy.close()
    assert os.listdir(work) == []  # the partial layer went with its staging directory


def _republish(client: Any, manifest: dict[str, Any], blob: bytes, tag: str, size: int | None = None) -> None:
    """``manifest`` (layout 3) with ``blob`` as its chunk list (declared ``size``, else its
    length), its config's diffIds to match, under ``tag``: a forgery whose descriptors are all
    consistent, so that only the chunk list's own checks stand between it and DEST."""
    forged = json.loads(json.dumps(manifest))
    digest = "sha256:" + hashlib.sha256(blob).hexdigest()
    forged["layers"][-1].update(digest=digest, size=len(blob) if size is None else size)
    config = json.loads(client.read_blob(manifest["config"]["digest"], 1 << 20))
    config["modelfs"]["diffIds"][-1] = digest
    raw = json.dumps(config).encode()
    forged["config"].update(digest="sha256:" + hashlib.sha256(raw).hexdigest(), size=len(raw))
    _put(client, forged, tag, (blob, raw))


def test_a_forged_chunk_list_is_refused_before_dest_appears(
    repo: Path, oci_registry: OciRegistry, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A layout-3 artifact (its chunk sizes in the chunk-list blob) whose chunk list is forged:
    declared larger than its files can need, sizes that do not sum to a layer's, an identity
    named twice, or bytes that are not the ones its digest names. Each is refused with one line
    (exit 5) before DEST exists; the real one pulls."""
    import random
    import struct

    from tests.oci.test_push_pull import push_in_process
    from uniflow.oci import modelpack as mp

    (repo / "model").mkdir()
    weights = random.Random(5).randbytes(3 << 20)
    (repo / "model" / "w.bin").write_bytes(weights)
    (repo / "model" / "config.json").write_text("{}")
    cli(repo, "models", "register", "model", "-n", "clf", "-v", "v1.0.0")
    monkeypatch.setattr(mp, "MAX_INLINE_MANIFEST_BYTES", 1000)
    url = oci_registry.url("forge/clf")
    push_in_process(repo, f"{url}:v1")
    client = _client(oci_registry, "forge/clf")
    manifest = json.loads(client.get_manifest("v1", 1 << 20))
    assert manifest["annotations"][mp.ANN_FORMAT] == mp.FORMAT_CHUNK_LIST
    blob = client.read_blob(manifest["layers"][-1]["digest"], 1 << 20)

    # the entries: (identity, sizes); one boundary of the weights' chunks moved by one byte
    entries, pos = [], 12
    for _ in range(struct.unpack_from("<I", blob, 8)[0]):
        ident, n = struct.unpack_from("<32sI", blob, pos)
        entries.append((ident, list(struct.unpack_from(f"<{n}I", blob, pos + 36))))
        pos += 36 + 4 * n

    def encode(rows: list[tuple[bytes, list[int]]]) -> bytes:
        out = b"UFCHUNK1" + struct.pack("<I", len(rows))
        return out + b"".join(i + struct.pack(f"<I{len(s)}I", len(s), *s) for i, s in rows)

    big = max(range(len(entries)), key=lambda k: sum(entries[k][1]))
    assert len(entries[big][1]) >= 2  # several chunks
    uneven = [list(e) for e in entries]
    uneven[big][1] = [*entries[big][1][:-1], entries[big][1][-1] - 1]
    moved = [list(e) for e in entries]
    first, second, *rest = entries[big][1]
    moved[big][1] = [first + 4096, second - 4096, *rest]  # same sum: caught by the bytes' hashes
    small = 1 - big
    twice = sorted([entries[small], *entries])
    _republish(client, manifest, blob, "oversize", size=1 << 40)
    _republish(client, manifest, encode([(i, s) for i, s in uneven]), "uneven")
    _republish(client, manifest, encode(twice), "twice")
    _republish(client, manifest, encode([(i, s) for i, s in moved]), "moved")
    client.close()

    for tag, words in [
        ("oversize", "the chunk list is declared 1099511627776 bytes"),
        ("uneven", "the chunk list's sizes do not cut its 3145728 bytes into chunks"),
        ("twice", "names identity " + entries[small][0].hex() + " twice"),
        ("moved", "file 'w.bin': the file does not match its registered digest"),
    ]:
        r = cli(work, "oci", "pull", f"{url}:{tag}", "d", "--plain-http", code=5)
        _one_error(r, words)
    assert os.listdir(work) == []

    # the registry serves other bytes under the chunk list's digest
    cli(work, "oci", "pull", f"{url}:v1", "d", "--plain-http")
    assert (work / "d" / "w.bin").read_bytes() == weights
    stored = oci_registry.blob_file(manifest["layers"][-1]["digest"])
    os.chmod(stored, 0o644)
    stored.write_bytes(blob[:-1] + bytes([blob[-1] ^ 1]))
    r = cli(work, "oci", "pull", f"{url}:v1", "d2", "--plain-http", code=5)
    _one_error(r, "the chunk list does not match its descriptor")
    assert os.listdir(work) == ["d"]
