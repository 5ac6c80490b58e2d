"""``uniflow oci push`` / ``oci pull`` / ``get oci://`` against a real registry (Debian's
``docker-registry`` on 127.0.0.1, plain HTTP), inspected with ``skopeo``: the CNCF ModelPack
format, each file's bytes uploaded once across versions, pulls verified and all-or-nothing."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import cli, make_repo, tree_bytes
from tests.oci.conftest import OciRegistry
from uniflow import ModelRegistry

pytestmark = pytest.mark.slow  # a network server

MODELPACK = "application/vnd.cncf.model"


def _model(path: Path, seed: int = 0, weights: bytes | None = None) -> Path:
    """A model directory with a file of every layer kind, one executable, one in a subdirectory."""
    rnd = random.Random(seed)
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(weights if weights is not None else rnd.randbytes(700_000))
    (path / "config.json").write_text(json.dumps({"hidden": 8, "seed": seed}))
    (path / "README.md").write_text(f"# classifier {seed}\n")
    (path / "tok").mkdir()
    (path / "tok" / "tokenizer.json").write_text('{"vocab": ["a", "b"]}')
    (path / "serve.sh").write_text("#!/bin/sh\necho serve\n")
    os.chmod(path / "serve.sh", 0o755)
    return path


def _register(repo: Path, src: Path, version: str, metrics: dict[str, float]) -> Any:
    from uniflow import ModelRegistry

    with ModelRegistry(repo) as reg:
        return reg.register(src, "clf", version=version, metrics=metrics, framework="pytorch")


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _b3sum(data: bytes) -> str:
    import blake3

    return blake3.blake3(data).hexdigest()


def test_push_writes_a_modelpack_artifact_skopeo_reads(
    repo: Path, tmp_path: Path, oci_registry: OciRegistry, skopeo: Any
) -> None:
    src = _model(tmp_path / "m")
    mv = _register(repo, src, "v1.0.0", {"acc": 0.93})
    cli(repo, "models", "promote", "clf", "v1.0.0", "--to", "production")
    url = oci_registry.url("team/clf", "prod")
    out = cli(repo, "oci", "push", "clf", "v1.0.0", url, "--plain-http", "--json")
    report = json.loads(out.stdout)
    assert report["ref"] == url and report["stage"] == "production" and report["files"] == 5

    docker = f"docker://{oci_registry.host}/team/clf:prod"
    raw = skopeo("inspect", "--raw", "--tls-verify=false", docker)
    manifest = json.loads(raw)
    assert _sha256(raw.encode()) == report["manifest_digest"]
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["artifactType"] == f"{MODELPACK}.manifest.v1+json"
    assert manifest["config"]["mediaType"] == f"{MODELPACK}.config.v1+json"
    ann = manifest["annotations"]
    assert ann["org.uniflow.name"] == "clf" and ann["org.uniflow.version"] == "v1.0.0"
    assert ann["org.uniflow.stage"] == "production"
    assert json.loads(ann["org.uniflow.metrics"]) == {"acc": 0.93}
    assert ann["org.uniflow.code-commit"] == mv.code_commit and len(mv.code_commit) == 40
    assert ann["org.uniflow.content-digest"] == f"blake3:{mv.digest}"
    assert ann["org.uniflow.framework"] == "pytorch"
    assert "org.uniflow.signer" not in ann  # versions are not signed here

    layers = {layer["annotations"]["org.cncf.model.filepath"]: layer for layer in manifest["layers"]}
    kinds = {path: layer["mediaType"] for path, layer in layers.items()}
    assert kinds == {
        "model.safetensors": f"{MODELPACK}.weight.v1.raw",
        "config.json": f"{MODELPACK}.weight.config.v1.raw",
        "tok/tokenizer.json": f"{MODELPACK}.weight.config.v1.raw",
        "README.md": f"{MODELPACK}.doc.v1.raw",
        "serve.sh": f"{MODELPACK}.code.v1.raw",
    }
    registered = tree_bytes(src)
    entries = {f.path: f for f in ModelRegistry(repo).repository.manifest("clf", "v1.0.0").files}
    assert ann["org.uniflow.oci.format"] == "2"  # a format-3 version: layers carry identities
    for path, layer in layers.items():  # one raw layer per file: its digest is the file's sha256
        assert layer["digest"] == _sha256(registered[path]) and layer["size"] == len(registered[path])
        assert layer["annotations"]["org.uniflow.file.blake3"] == _b3sum(registered[path])
        assert layer["annotations"]["org.uniflow.file.digest"] == entries[path].digest
        sizes = [int(n) for n in layer["annotations"]["org.uniflow.file.chunks"].split(",")]
        assert sizes == [n for _, n in entries[path].chunks]
        meta = json.loads(layer["annotations"]["org.cncf.model.file.metadata+json"])
        assert meta["mode"] == (0o755 if path == "serve.sh" else 0o644) and meta["size"] == layer["size"]

    config = json.loads(skopeo("inspect", "--config", "--raw", "--tls-verify=false", docker))
    assert config["descriptor"]["name"] == "clf" and config["descriptor"]["version"] == "v1.0.0"
    assert config["modelfs"] == {
        "type": "layers",
        "diffIds": [layer["digest"] for layer in manifest["layers"]],
    }

    # another client copies the blobs out: they are the registered bytes
    skopeo("copy", "--src-tls-verify=false", docker, f"dir:{tmp_path / 'copy'}")
    for path, data in registered.items():
        assert (tmp_path / "copy" / layers[path]["digest"].removeprefix("sha256:")).read_bytes() == data


def test_pull_and_get_write_the_registered_bytes(
    repo: Path, tmp_path: Path, oci_registry: OciRegistry
) -> None:
    src = _model(tmp_path / "m", seed=1)
    mv = _register(repo, src, "v2.0.0", {"acc": 0.5})
    url = oci_registry.url("pull/clf")
    cli(repo, "oci", "push", "clf", "v2.0.0", url, "--plain-http")  # the tag defaults to the version

    work = tmp_path / "elsewhere"  # no repository needed
    work.mkdir()
    out = cli(work, "oci", "pull", f"{url}:v2.0.0", "dest", "--plain-http", "--json")
    report = json.loads(out.stdout)
    assert tree_bytes(work / "dest") == tree_bytes(src)
    assert os.stat(work / "dest" / "serve.sh").st_mode & 0o111
    assert report["content_digest"] == mv.digest and report["name"] == "clf" and report["version"] == "v2.0.0"
    assert {f["path"]: f["digest"] for f in report["files"]} == {f.path: f.digest for f in mv.files}
    assert {f["path"]: f["b3sum"] for f in report["files"]} == {
        p: _b3sum(d) for p, d in tree_bytes(src).items()
    }
    assert sorted(os.listdir(work)) == ["dest"]  # nothing left beside DEST

    # `uniflow get oci://...` writes ./NAME, and checks the artifact is the model asked for
    got = cli(work, "get", f"{url}:v2.0.0", "clf", "--plain-http")
    assert "Pulled clf v2.0.0" in got.stdout
    assert tree_bytes(work / "clf") == tree_bytes(src)
    other = cli(work, "get", f"{url}:v2.0.0", "other", "--plain-http", code=2)
    assert other.stderr.strip().splitlines() == [f"error: {url}:v2.0.0 holds model 'clf', not 'other'"]
    assert not (work / "other").exists()
    cli(work, "get", f"{url}:v2.0.0", "clf", "v9.9.9", "-o", "x", "--plain-http", code=2)
    pinned = cli(
        work, "oci", "pull", f"{url}:v2.0.0", "y", "--plain-http", "--content-digest", "0" * 64, code=5
    )
    assert "not the expected" in pinned.stderr
    assert sorted(os.listdir(work)) == ["clf", "dest"]

    # DEST a symlink: refused, even with --force, and its target untouched
    (tmp_path / "target").mkdir()
    os.symlink(tmp_path / "target", work / "link")
    for extra in ([], ["--force"]):
        cli(work, "oci", "pull", f"{url}:v2.0.0", "link", "--plain-http", *extra, code=2)
    assert os.listdir(tmp_path / "target") == [] and os.path.islink(work / "link")
    os.unlink(work / "link")

    # by digest, and into an existing DEST only with --force (replaced once complete)
    digest = report["manifest_digest"]
    cli(work, "oci", "pull", f"{url}@{digest}", "dest", "--plain-http", code=2)
    (work / "dest" / "stale.txt").write_text("old")
    cli(work, "oci", "pull", f"{url}@{digest}", "dest", "--plain-http", "--force")
    assert tree_bytes(work / "dest") == tree_bytes(src)


def test_a_file_shared_by_two_versions_is_uploaded_once(
    repo: Path, tmp_path: Path, oci_registry: OciRegistry
) -> None:
    shared = random.Random(7).randbytes(900_000)
    _register(repo, _model(tmp_path / "a", seed=2, weights=shared), "v1.0.0", {"acc": 0.1})
    _register(repo, _model(tmp_path / "b", seed=3, weights=shared), "v1.1.0", {"acc": 0.2})
    url = oci_registry.url("dedup/clf")
    first = json.loads(cli(repo, "oci", "push", "clf", "v1.0.0", url, "--plain-http", "--json").stdout)
    second = json.loads(cli(repo, "oci", "push", "clf", "v1.1.0", url, "--plain-http", "--json").stdout)
    again = json.loads(
        cli(repo, "oci", "push", "clf", "v1.1.0", f"{url}:latest", "--plain-http", "--json").stdout
    )

    # v1.1.0 shares model.safetensors, tokenizer.json and serve.sh with v1.0.0
    assert (first["uploaded"], first["reused"]) == (6, 0)  # 5 files and the config
    assert (second["uploaded"], second["reused"]) == (3, 3)  # config.json, README.md, the config
    assert (again["uploaded"], again["reused"]) == (0, 6)
    uploads = oci_registry.uploads("dedup/clf")
    assert len(uploads) == len(set(uploads)) == 9  # no blob crossed the network twice
    assert uploads.count(hashlib.sha256(shared).hexdigest()) == 1
    assert again["manifest_digest"] == second["manifest_digest"]  # the same bytes, the same manifest


def test_pull_refuses_bytes_that_do_not_match(repo: Path, tmp_path: Path, oci_registry: OciRegistry) -> None:
    src = _model(tmp_path / "m", seed=4)
    _register(repo, src, "v1.0.0", {})
    url = oci_registry.url("tamper/clf", "v1")
    report = json.loads(cli(repo, "oci", "push", "clf", "v1.0.0", url, "--plain-http", "--json").stdout)
    layer = _sha256((src / "config.json").read_bytes())
    blob = oci_registry.blob_file(layer)
    os.chmod(blob, 0o644)
    blob.write_bytes(b'{"hidden": 9, "seed": 4}')  # same length class, other bytes: the registry serves them

    work = tmp_path / "w"
    work.mkdir()
    r = cli(work, "oci", "pull", url, "dest", "--plain-http", code=5)
    assert r.stderr.count("\n") == 1 and "do not match the layer digest" in r.stderr, r.stderr
    assert os.listdir(work) == []  # no DEST, no staging left
    assert report["files"] == 5


def test_bad_input_is_one_line_and_a_nonzero_exit(
    repo: Path, tmp_path: Path, oci_registry: OciRegistry
) -> None:
    work = tmp_path / "w"
    work.mkdir()
    cases = [
        (["oci", "pull", "s3://bucket/model", "d"], 2, "unknown scheme 's3://'"),
        (["oci", "pull", "oci://127.0.0.1:5000/Bad_Name:tag", "d"], 2, "not a valid OCI reference"),
        (["oci", "pull", oci_registry.url("nothing/here", "v1"), "d", "--plain-http"], 3, "names nothing"),
        (["oci", "pull", oci_registry.url("nothing/here"), "d", "--plain-http"], 2, "give a tag"),
        (["oci", "push", "clf", "v1.0.0", oci_registry.url("x/y", "t")], 3, "not found"),  # no such model
        (["get", oci_registry.url("x/y", "t"), "clf", "--stage", "production"], 2, "--stage does not apply"),
    ]
    for args, code, words in cases:
        r = cli(repo if args[1] == "push" else work, *args, code=code)
        assert r.stderr.count("\n") == 1 and words in r.stderr, (args, r.stderr)
    assert os.listdir(work) == []

    # TLS against a registry that speaks plain HTTP: the error says what to do
    r = cli(work, "oci", "pull", oci_registry.url("nothing/here", "v1"), "d", code=9)
    assert r.stderr.count("\n") == 1 and "--plain-http" in r.stderr, r.stderr


def test_push_from_a_registry_read_by_url(
    tmp_path: Path, oci_registry: OciRegistry, monkeypatch: Any
) -> None:
    """``uniflow oci push --repo URL``: a CI job pushes the production version of a Git
    registry it never cloned (the bytes come from its blob remote, verified)."""
    from tests.helpers import publish_registry

    monkeypatch.setenv("UNIFLOW_CACHE_DIR", str(tmp_path / "user-cache"))
    pub = publish_registry(tmp_path)
    work = tmp_path / "ci"
    work.mkdir()
    url = oci_registry.url("from-url/clf", "production")
    out = cli(work, "oci", "push", "clf", "v1.0.0", url, "--plain-http", "--json", "--repo", str(pub["bare"]))
    assert json.loads(out.stdout)["stage"] == "production"
    cli(work, "oci", "pull", url, "dest", "--plain-http")
    assert tree_bytes(work / "dest") == tree_bytes(pub["v1"])


def test_a_repush_reads_no_file_the_registry_holds(
    repo: Path, tmp_path: Path, oci_registry: OciRegistry
) -> None:
    """The sha256 of each pushed file is remembered (derived cache, by BLAKE3 digest): pushing
    again where the blobs are reads nothing, even with the bytes gone from the local store;
    pushing where they are not needs the bytes, and says so."""
    import shutil

    _register(repo, _model(tmp_path / "m", seed=5), "v1.0.0", {})
    url = oci_registry.url("cached/clf")
    cli(repo, "oci", "push", "clf", "v1.0.0", f"{url}:one", "--plain-http")
    store = repo / ".git" / "uniflow"
    for part in ("objects", "packs", "cache/files", "cache/versions"):  # every byte of the store
        shutil.rmtree(store / part, ignore_errors=True)
    assert not (store / "objects").exists() and not (store / "packs").exists()
    assert not (store / "cache" / "files").exists()
    again = json.loads(
        cli(repo, "oci", "push", "clf", "v1.0.0", f"{url}:two", "--plain-http", "--json").stdout
    )
    assert (again["uploaded"], again["reused"]) == (0, 6)
    elsewhere = cli(
        repo,
        "oci",
        "push",
        "clf",
        "v1.0.0",
        oci_registry.url("cached/other", "one"),
        "--plain-http",
        code=None,
    )
    assert elsewhere.returncode != 0 and elsewhere.stderr.count("\n") == 1, elsewhere.stderr


def test_a_signed_version_carries_its_verified_signer(tmp_path: Path, oci_registry: Any, skopeo: Any) -> None:
    """A version whose tag is signed by an allowed signer of the policy is pushed with
    ``org.uniflow.signer`` naming that principal (verified, never claimed)."""
    from tests.authority.conftest import git, make_key

    key = make_key(tmp_path / "keys", "alice")
    repo = make_repo(tmp_path / "repo")
    (repo / ".uniflow").mkdir(exist_ok=True)
    (repo / ".uniflow/policy.toml").write_text('[admins]\nprincipals = ["alice@example.com"]\n')
    (repo / ".uniflow/allowed_signers").write_text(f'alice@example.com namespaces="git" {key.pub_line}\n')
    git(repo, "add", ".uniflow")
    git(repo, "config", "gpg.format", "ssh")
    git(repo, "config", "user.signingKey", str(key.path))
    git(repo, "commit", "-q", "-S", "-m", "uniflow policy")
    model = tmp_path / "model.bin"
    model.write_bytes(b"signed weights" * 512)
    ModelRegistry(repo).register(str(model), "clf", version="v1.0.0")

    url = oci_registry.url("team/signed", "v1")
    cli(repo, "oci", "push", "clf", "v1.0.0", url, "--plain-http")
    raw = skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{oci_registry.host}/team/signed:v1")
    assert json.loads(raw)["annotations"]["org.uniflow.signer"] == "alice@example.com"


def test_a_format2_version_pushes_and_pulls_as_before(
    repo: Path, tmp_path: Path, oci_registry: OciRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version registered before manifest format 3 (file digest = BLAKE3 of the bytes) is
    pushed in layout 1, as uniflow pushed it then: no identity or chunk annotations, the
    BLAKE3 annotation is the registered digest; it pulls with its content digest pinned."""
    from tests.legacy_formats import register_as
    from uniflow.oci.client import OciClient
    from uniflow.oci.ref import parse_oci_ref

    src = _model(tmp_path / "m", seed=8)
    with ModelRegistry(repo) as reg:
        mv = register_as(2, reg, monkeypatch, str(src), "clf", version="v1.0.0")
        assert reg.repository.manifest("clf", "v1.0.0").format == 2
    registered = tree_bytes(src)
    assert {f.path: f.digest for f in mv.files} == {p: _b3sum(d) for p, d in registered.items()}
    url = oci_registry.url("legacy/clf", "v1")
    cli(repo, "oci", "push", "clf", "v1.0.0", url, "--plain-http")

    client = OciClient(parse_oci_ref(url), plain_http=True)
    try:
        manifest = json.loads(client.get_manifest("v1", 1 << 20))
    finally:
        client.close()
    assert manifest["annotations"]["org.uniflow.oci.format"] == "1"
    assert manifest["annotations"]["org.uniflow.content-digest"] == f"blake3:{mv.digest}"
    for layer in manifest["layers"]:
        ann = layer["annotations"]
        assert "org.uniflow.file.digest" not in ann and "org.uniflow.file.chunks" not in ann
        assert ann["org.uniflow.file.blake3"] == _b3sum(registered[ann["org.cncf.model.filepath"]])

    work = tmp_path / "w"
    work.mkdir()
    out = cli(work, "oci", "pull", url, "dest", "--plain-http", "--content-digest", mv.digest, "--json")
    assert tree_bytes(work / "dest") == registered
    report = json.loads(out.stdout)
    assert report["content_digest"] == mv.digest
    assert {f["path"]: f["digest"] for f in report["files"]} == {f.path: f.digest for f in mv.files}


def push_in_process(repo: Path, url: str, version: str = "v1.0.0") -> Any:
    """``uniflow oci push clf VERSION URL --plain-http`` in this process, so that a test may
    lower ``modelpack.MAX_INLINE_MANIFEST_BYTES`` with monkeypatch (a chunk list of more than
    4 MiB of annotations would need some 140 GiB of files)."""
    from uniflow.oci.push import push_version
    from uniflow.oci.ref import parse_oci_ref

    with ModelRegistry(repo) as reg:
        return push_version(reg.repository, "clf", version, parse_oci_ref(url), plain_http=True)


def test_a_version_whose_chunk_sizes_exceed_the_manifest_bound_pushes_and_pulls(
    repo: Path, tmp_path: Path, oci_registry: OciRegistry, skopeo: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the bound on a manifest carrying chunk sizes lowered below this version's (as a
    version of some 140 GiB or more meets the 4 MiB one), the chunk sizes move into the chunk
    list: the manifest's last layer, of uniflow's own media type, with no file path or title;
    another client reads and copies the artifact, and a pull writes the registered bytes."""
    from uniflow.oci import modelpack as mp

    src = _model(tmp_path / "m", seed=9, weights=random.Random(9).randbytes(3 << 20))
    mv = _register(repo, src, "v1.0.0", {"acc": 0.7})
    monkeypatch.setattr(mp, "MAX_INLINE_MANIFEST_BYTES", 2000)
    url = oci_registry.url("big/clf", "v1")
    report = push_in_process(repo, url)

    docker = f"docker://{oci_registry.host}/big/clf:v1"
    raw = skopeo("inspect", "--raw", "--tls-verify=false", docker)
    assert _sha256(raw.encode()) == report.manifest_digest
    manifest = json.loads(raw)
    assert manifest["annotations"]["org.uniflow.oci.format"] == "3"
    *files, last = manifest["layers"]
    assert last["mediaType"] == "application/vnd.uniflow.file.chunks.v1" and "annotations" not in last
    entries = {f.path: f for f in mv.files}
    for layer in files:
        ann = layer["annotations"]
        assert "org.uniflow.file.chunks" not in ann
        assert ann["org.uniflow.file.digest"] == entries[ann["org.cncf.model.filepath"]].digest
    config = json.loads(skopeo("inspect", "--config", "--raw", "--tls-verify=false", docker))
    assert config["modelfs"]["diffIds"] == [layer["digest"] for layer in manifest["layers"]]
    skopeo("copy", "--src-tls-verify=false", docker, f"dir:{tmp_path / 'copy'}")
    assert (tmp_path / "copy" / last["digest"].removeprefix("sha256:")).stat().st_size == last["size"]

    work = tmp_path / "w"
    work.mkdir()
    out = cli(work, "oci", "pull", url, "dest", "--plain-http", "--content-digest", mv.digest, "--json")
    assert tree_bytes(work / "dest") == tree_bytes(src)
    assert {f["path"]: f["digest"] for f in json.loads(out.stdout)["files"]} == {
        f.path: f.digest for f in mv.files
    }
    # under the default bound, the same version is pushed in layout 2 as before
    monkeypatch.undo()
    small = cli(repo, "oci", "push", "clf", "v1.0.0", f"{url[:-3]}:small", "--plain-http", "--json")
    assert json.loads(small.stdout)["manifest_digest"] != report.manifest_digest
    client = _oci_client(oci_registry, "big/clf")
    try:
        assert (
            json.loads(client.get_manifest("small", 1 << 20))["annotations"]["org.uniflow.oci.format"] == "2"
        )
    finally:
        client.close()


def _oci_client(reg: OciRegistry, repository: str) -> Any:
    from uniflow.oci.client import OciClient
    from uniflow.oci.ref import parse_oci_ref

    return OciClient(parse_oci_ref(reg.url(repository, "x")), plain_http=True)
