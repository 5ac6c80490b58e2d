"""Manifest format 3 (issue 25): one hash pass at register, Merkle identities for files and
tensors, checked by the gate; formats 1 and 2 still read, and never compared across kinds."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import blake3
import msgpack
import numpy as np
import pytest
from safetensors.numpy import save_file

from tests.adversarial._forge_git import forge_version, one_line_error
from tests.helpers import cli, clone, model_dir, open_registry, shared_setup, tree_bytes
from tests.legacy_formats import register_as
from uniflow import IntegrityError, ModelRegistry, VersionExistsError
from uniflow._records.manifest import MANIFEST_FORMAT, NewerManifestError, content_digest, pack, unpack
from uniflow._storage.chunking import CHUNK_PARAMS
from uniflow._storage.merkle import merkle_identity, range_identity

MIN = CHUNK_PARAMS["min_size"]


def _tensors(seed: int, big: int = 3 * MIN) -> dict[str, np.ndarray]:
    """Two large tensors (at least the minimum chunk) and small ones that share their chunks."""
    rng = np.random.default_rng(seed)
    return {
        "embed.weight": rng.standard_normal(big // 4).astype(np.float32),
        "embed.bias": rng.standard_normal(16).astype(np.float32),
        "head.weight": rng.standard_normal(MIN // 4).astype(np.float32),
        "head.bias": rng.standard_normal(8).astype(np.float32),
    }


def _save(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=metadata)
    return path


def _manifest(registry: ModelRegistry, name: str, version: str):
    return registry.repository.manifest(name, version)


# ---------------------------------------------------------------------- what register records
def test_register_writes_format_3_identities_from_the_chunks(registry: ModelRegistry, tmp_path: Path) -> None:
    src = _save(tmp_path / "m" / "model.safetensors", _tensors(0))
    (tmp_path / "m" / "notes.txt").write_bytes(os.urandom(3 * MIN))
    registry.register(str(tmp_path / "m"), "lm", version="v1.0.0")
    m = _manifest(registry, "lm", "v1.0.0")
    assert m.format == MANIFEST_FORMAT == 3
    raw = src.read_bytes()
    for f in m.files:
        assert f.digest == merkle_identity(f.chunks)
        assert f.digest != blake3.blake3((tmp_path / "m" / f.path).read_bytes()).hexdigest()
    (st,) = [f for f in m.files if f.path == "model.safetensors"]
    assert st.tensors is not None and len(st.tensors) == 4
    ends = set()
    pos = 0
    for _, n in st.chunks:
        pos += n
        ends.add(pos)
    for t in st.tensors:
        assert t.digest == range_identity(st.chunks, t.begin, t.end, raw[t.begin : t.end])
    big = next(t for t in st.tensors if t.name == "embed.weight")
    assert big.end in ends  # a tensor boundary is a cut point
    # a small tensor sharing a chunk: one leaf, the BLAKE3 of its bytes
    bias = next(t for t in st.tensors if t.name == "head.bias")
    data = raw[bias.begin : bias.end]
    assert bias.digest == merkle_identity([(blake3.blake3(data).digest(), len(data))])


def test_a_large_tensor_identity_depends_on_its_bytes_only(registry: ModelRegistry, tmp_path: Path) -> None:
    """Same tensor bytes, other neighbours and another header (metadata): same identity."""
    a = _tensors(1)
    b = {**_tensors(2), "embed.weight": a["embed.weight"], "extra.scale": np.ones(7, np.float32)}
    _save(tmp_path / "a" / "model.safetensors", a)
    _save(tmp_path / "b" / "model.safetensors", b, metadata={"note": "x" * 5000})
    registry.register(str(tmp_path / "a"), "m", version="v1.0.0")
    registry.register(str(tmp_path / "b"), "m", version="v2.0.0")

    def ids(version: str) -> dict[str, str]:
        (f,) = _manifest(registry, "m", version).files
        return {t.name: t.digest for t in f.tensors or ()}

    ia, ib = ids("v1.0.0"), ids("v2.0.0")
    assert ia["embed.weight"] == ib["embed.weight"]
    assert ia["head.weight"] != ib["head.weight"]
    diff = registry.diff("m", "v1.0.0", "v2.0.0")
    statuses = {t.name: t.status for t in diff.files[0].tensors or ()}
    assert statuses["embed.weight"] == "unchanged" and statuses["head.weight"] == "changed"


def test_streamed_state_dict_and_saved_file_give_one_identity(
    registry: ModelRegistry, tmp_path: Path
) -> None:
    """The torch serializer streams a state dict (put_segments, cut in memory); the same
    bytes registered as a file (put_file, read from disk) give the same chunks and identities."""
    torch = pytest.importorskip("torch")
    sd = {k: torch.from_numpy(v) for k, v in _tensors(3).items()}
    registry.register(sd, "sd", version="v1.0.0")
    (streamed,) = _manifest(registry, "sd", "v1.0.0").files
    assert streamed.tensors is not None and len(streamed.tensors) == 4
    registry.export("sd", str(tmp_path / "f"), version="v1.0.0")
    registry.register(str(tmp_path / "f"), "sd", version="v2.0.0")
    (saved,) = _manifest(registry, "sd", "v2.0.0").files
    assert (saved.chunks, saved.digest, saved.tensors) == (streamed.chunks, streamed.digest, streamed.tensors)


# ---------------------------------------------------------------------- the gate
@pytest.fixture
def manifest3(registry: ModelRegistry, tmp_path: Path) -> dict[str, Any]:
    _save(tmp_path / "m" / "model.safetensors", _tensors(4))
    registry.register(str(tmp_path / "m"), "m", version="v1.0.0")
    return copy.deepcopy(_manifest(registry, "m", "v1.0.0").to_dict())


def test_a_digest_that_is_not_the_identity_of_the_chunks_is_refused(manifest3: dict[str, Any]) -> None:
    assert unpack(pack(manifest3)).format == 3
    forged = copy.deepcopy(manifest3)
    f = forged["files"][0]
    f["digest"] = blake3.blake3(b"other").hexdigest()
    forged["content_digest"] = content_digest(forged["files"])
    with pytest.raises(IntegrityError, match="digest is not the identity of its chunks"):
        unpack(pack(forged), "v1.0.0")
    # two chunks swapped: the same sizes in all, another identity
    swapped = copy.deepcopy(manifest3)
    chunks = swapped["files"][0]["chunks"]
    assert len(chunks) >= 2
    chunks[0], chunks[-1] = chunks[-1], chunks[0]
    swapped["content_digest"] = content_digest(swapped["files"])
    with pytest.raises(IntegrityError, match="not the identity of its chunks"):
        unpack(pack(swapped))


def test_the_same_manifest_as_format_2_is_read_with_its_b3sum_digests(manifest3: dict[str, Any]) -> None:
    """A format-2 manifest's digests are not Merkle identities, and are not checked as such."""
    old = copy.deepcopy(manifest3)
    old["format"] = 2
    old["files"][0]["digest"] = "ab" * 32
    old["content_digest"] = content_digest(old["files"])
    data = pack(old)
    assert pack(unpack(data)) == data


def test_a_newer_format_says_upgrade_uniflow(registry: ModelRegistry, manifest3: dict[str, Any]) -> None:
    newer = {**manifest3, "format": 4}
    with pytest.raises(NewerManifestError) as err:
        unpack(pack(newer), "refs/tags/models/m/v9.0.0")
    assert str(err.value) == (
        "refs/tags/models/m/v9.0.0: manifest written by a newer uniflow (format 4; "
        "this one reads up to 3): upgrade uniflow"
    )
    assert isinstance(err.value, IntegrityError)
    forge_version(registry.root, "m", "v9.0.0", {**newer, "version": "v9.0.0"})
    line = one_line_error(cli(registry.root, "models", "show", "m", "v9.0.0", code=5).stderr)
    assert "newer uniflow (format 4; this one reads up to 3): upgrade uniflow" in line
    assert [v.version for v in ModelRegistry(registry.root).list_versions("m")] == ["v1.0.0"]  # skipped


# ---------------------------------------------------------------------- mixed repositories
def test_mixed_repository_diff_compares_bytes_across_kinds(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """v1 in format 2 (BLAKE3 digests), v2 in format 3 with the same bytes, v3 a head-only
    fine-tune: the two kinds of digest are never compared with each other."""
    base = _tensors(5)
    src = _save(tmp_path / "m" / "model.safetensors", base)
    register_as(2, registry, monkeypatch, str(src.parent), "m", version="v1.0.0")
    registry.register(str(src.parent), "m", version="v2.0.0")
    _save(src, {**base, "head.bias": base["head.bias"] + 1})
    registry.register(str(src.parent), "m", version="v3.0.0")
    m1, m2 = _manifest(registry, "m", "v1.0.0"), _manifest(registry, "m", "v2.0.0")
    assert (m1.format, m2.format) == (2, 3)
    assert m1.files[0].digest == blake3.blake3(_tensor_file(base, tmp_path)).hexdigest()
    assert m1.files[0].digest != m2.files[0].digest and m1.content_digest != m2.content_digest

    same = registry.diff("m", "v1.0.0", "v2.0.0")
    assert same.files[0].status == "unchanged"
    assert {t.status for t in same.files[0].tensors or ()} == {"unchanged"}
    tuned = registry.diff("m", "v1.0.0", "v3.0.0")
    assert tuned.files[0].status == "changed"
    assert {t.name for t in tuned.files[0].tensors or () if t.status != "unchanged"} == {"head.bias"}
    rows = {r["key"]: r for r in registry.compare_versions("m", ["v1.0.0", "v2.0.0"]).rows["info"]}
    assert rows["tensors (vs first)"]["values"][1] == same.summary["line"]
    for v in ("v1.0.0", "v2.0.0"):  # both load, and partial loads check either kind of digest
        assert (Path(registry.load_path("m", v)) / "model.safetensors").read_bytes() == _tensor_file(
            base, tmp_path
        )
    assert registry.verify().ok
    out = cli(registry.root, "verify", "--b3sum", "--json").stdout
    sums = json.loads(out)["b3sums"]
    assert {(s["version"], s["ok"]) for s in sums} >= {("v1.0.0", True), ("v2.0.0", True)}
    by_version = {s["version"]: s for s in sums}
    assert by_version["v1.0.0"]["recorded"] == by_version["v1.0.0"]["b3sum"] == m1.files[0].digest
    assert by_version["v2.0.0"]["recorded"] is None and by_version["v2.0.0"]["b3sum"] == m1.files[0].digest


def _tensor_file(tensors: dict[str, np.ndarray], tmp_path: Path) -> bytes:
    return _save(tmp_path / "again" / "model.safetensors", tensors).read_bytes()


def test_partial_load_checks_format_3_tensor_identities(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = _tensors(6)
    _save(tmp_path / "m" / "model.safetensors", t)
    register_as(2, registry, monkeypatch, str(tmp_path / "m"), "m", version="v1.0.0")
    registry.register(str(tmp_path / "m"), "m", version="v2.0.0")
    for v in ("v1.0.0", "v2.0.0"):
        got = registry.load("m", v, tensors=["head.*", "embed.weight"])
        assert np.array_equal(np.asarray(got["head.bias"]), t["head.bias"])
        assert np.array_equal(np.asarray(got["embed.weight"]), t["embed.weight"])
    # a format-3 manifest whose tensor digest lies (the gate cannot see it) is caught on read
    m = copy.deepcopy(_manifest(registry, "m", "v2.0.0").to_dict())
    row = next(r for r in m["files"][0]["tensors"] if r[0] == "head.bias")
    row[5] = "cd" * 32
    m["version"] = "v2.0.1"
    forge_version(registry.root, "m", "v2.0.1", m)
    with pytest.raises(IntegrityError, match="does not match its digest"):
        ModelRegistry(registry.root).load("m", "v2.0.1", tensors=["head.bias"])


def test_verify_b3sum_reports_a_format_2_digest_that_does_not_match(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = model_dir(tmp_path / "m", 1, size=MIN)
    register_as(2, registry, monkeypatch, str(src), "m", version="v1.0.0")
    m = copy.deepcopy(_manifest(registry, "m", "v1.0.0").to_dict())
    m["files"][0]["digest"] = "ef" * 32  # format 2: the gate cannot check it
    m["content_digest"] = content_digest(m["files"])
    m["version"] = "v1.0.1"
    forge_version(registry.root, "m", "v1.0.1", m)
    r = cli(registry.root, "verify", "m", "--b3sum", code=5)
    assert "MISMATCH: the manifest records " + "ef" * 32 in r.stdout
    good = blake3.blake3(next(p for p in src.rglob("*") if p.is_file()).read_bytes()).hexdigest()
    assert f"{good}  m v1.0.0 " in r.stdout
    plain = cli(registry.root, "verify", "m", code=5).stdout  # only v1.0.1's missing register event
    assert "MISMATCH" not in plain and "corrupted" not in plain and "missing" not in plain


def test_export_and_get_print_b3sums_when_asked(registry: ModelRegistry, tmp_path: Path) -> None:
    src = _save(tmp_path / "m" / "model.safetensors", _tensors(7))
    registry.register(str(src.parent), "m", version="v1.0.0")
    want = blake3.blake3(src.read_bytes()).hexdigest()
    out = cli(registry.root, "models", "export", "m", "v1.0.0", str(tmp_path / "out"), "--b3sum").stdout
    assert f"{want}  model.safetensors" in out
    data = json.loads(
        cli(registry.root, "models", "export", "m", str(tmp_path / "out2"), "--b3sum", "--json").stdout
    )
    assert data["b3sum"] == {"model.safetensors": want}
    plain = json.loads(cli(registry.root, "models", "export", "m", str(tmp_path / "o3"), "--json").stdout)
    assert "b3sum" not in plain


def test_mixed_versions_push_pull_load_and_gc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A format-2 version and a format-3 one in one repository: pushed to a directory blob
    remote, pulled by a clone, loaded there; gc keeps every chunk either needs."""
    bare, a = shared_setup(tmp_path)
    ra = open_registry(a)
    src1 = model_dir(tmp_path / "m1", 3, size=MIN, seed=1)
    src2 = model_dir(tmp_path / "m2", 3, size=MIN, seed=2)
    register_as(2, ra, monkeypatch, str(src1), "clf", version="v1.0.0")
    ra.register(str(src2), "clf", version="v2.0.0")
    ra.gc(dry_run=False, grace_seconds=0)
    assert ra.verify().ok  # gc kept every chunk of both versions
    ra.push()
    b = clone(bare, tmp_path / "b")
    cli(b, "pull")
    rb = open_registry(b)
    assert [rb.repository.manifest("clf", v).format for v in ("v1.0.0", "v2.0.0")] == [2, 3]
    assert tree_bytes(Path(rb.load_path("clf", "v1.0.0"))) == tree_bytes(src1)
    assert tree_bytes(Path(rb.load_path("clf", "v2.0.0"))) == tree_bytes(src2)
    assert rb.verify().ok
    _get_b3sums(tmp_path, bare, "v1.0.0", src1)


def test_get_of_a_format_3_version_prints_b3sums(tmp_path: Path) -> None:
    bare, a = shared_setup(tmp_path)
    src = model_dir(tmp_path / "m", 2, size=MIN, seed=3)
    ra = open_registry(a)
    ra.register(str(src), "clf", version="v1.0.0")
    ra.push()
    _get_b3sums(tmp_path, bare, "v1.0.0", src)


def _get_b3sums(tmp_path: Path, bare: Path, version: str, src: Path) -> None:
    """``uniflow get --b3sum --json`` of ``version``: each file's b3sum, and the bytes."""
    out = tmp_path / f"get-{version}"
    blobs = str(tmp_path / "blobs")
    args = ("get", str(bare), "clf", version, "-o", str(out), "--blob", blobs, "--b3sum", "--json")
    got = json.loads(cli(tmp_path, *args).stdout)
    files = [p for p in src.rglob("*") if p.is_file()]
    want = {p.relative_to(src).as_posix(): blake3.blake3(p.read_bytes()).hexdigest() for p in files}
    assert {f["path"]: f["b3sum"] for f in got["files"]} == want
    assert tree_bytes(out) == tree_bytes(src)


def test_a_format_3_manifest_packs_back_byte_for_byte(manifest3: dict[str, Any]) -> None:
    data = pack(manifest3)
    assert pack(unpack(data)) == data
    assert msgpack.unpackb(data, raw=False)["format"] == 3


def test_registering_a_format_2_version_again_is_idempotent_when_its_chunks_are_the_same(
    registry: ModelRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same files as an existing format-2 version: its content digest is of the other
    kind, so the chunks decide (same chunks: the same version, nothing written)."""
    src = model_dir(tmp_path / "m", 2, size=MIN, seed=4)
    register_as(2, registry, monkeypatch, str(src), "m", version="v1.0.0")
    assert registry.register(str(src), "m", version="v1.0.0").version == "v1.0.0"
    assert _manifest(registry, "m", "v1.0.0").format == 2
    (next(p for p in src.rglob("*") if p.is_file())).write_bytes(os.urandom(MIN))
    with pytest.raises(VersionExistsError):
        registry.register(str(src), "m", version="v1.0.0")
