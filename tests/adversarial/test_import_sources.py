"""Importers read only what they were asked to read.

Issue items 2 (a hostile MLflow server's ``file://`` download URI got a local file imported),
7 (a 500-byte ``artifacts.yaml`` of YAML aliases cost 1.5 GiB in ``import gto``) and 11 (GTO
import read outside the repository through a committed ``.dvc/cache`` symlink; a tree naming
one path both as a file and a directory aborted the whole import). Every refused version is
reported by name as ``failed`` (exit 1); the good versions still import, and a canary file
outside the source never reaches the store.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import threading
import tracemalloc
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from tests.helpers import cli, git
from uniflow import ModelRegistry

# ----------------------------------------------------------------------------- the canary


@pytest.fixture
def canary(tmp_path: Path) -> tuple[Path, bytes]:
    """A directory outside every source, holding a secret no version may ever contain."""
    secret = f"CANARY-{uuid.uuid4().hex}".encode()
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "credentials").write_bytes(secret)
    (outside / "sub" / "more").write_bytes(secret)
    return outside, secret


def _assert_canary_absent(repo: Path, secret: bytes) -> None:
    """No registered version holds the secret, and no file of the store or .uniflow does."""
    reg = ModelRegistry(repo)
    for summary in reg.list_models():
        for v in reg.list_versions(summary.name):
            root = reg.load_path(summary.name, v.version)
            for p in root.rglob("*"):
                if p.is_file():
                    assert secret not in p.read_bytes(), (summary.name, v.version, p)
    for base in (repo / ".git" / "uniflow", repo / ".uniflow"):
        for p in base.rglob("*") if base.exists() else []:
            if p.is_file() and not p.is_symlink():
                assert secret not in p.read_bytes(), p


def _by_source(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["source"]: v for v in report["versions"]}


# ----------------------------------------------------------------------------- MLflow server


class _FakeMlflow(BaseHTTPRequestHandler):
    """The REST calls ``import mlflow`` makes, answered by a hostile server: one model whose
    versions' download URIs point at the client's own files, or at another server."""

    uris: dict[str, str] = {}
    files: dict[str, bytes] = {}

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _json(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        path = url.path
        if path.endswith("/mlflow/registered-models/search"):
            return self._json(
                {"registered_models": [{"name": "evil", "creation_timestamp": 1_700_000_000_000}]}
            )
        if path.endswith("/mlflow/registered-models/get"):
            return self._json({"registered_model": {"name": "evil", "creation_timestamp": 1_700_000_000_000}})
        if path.endswith("/mlflow/model-versions/search"):
            versions = [
                {
                    "name": "evil",
                    "version": n,
                    "creation_timestamp": 1_700_000_000_000 + int(n),
                    "last_updated_timestamp": 1_700_000_000_000 + int(n),
                    "current_stage": "None",
                    "status": "READY",
                    "source": uri,
                }
                for n, uri in sorted(self.uris.items(), key=lambda kv: int(kv[0]))
            ]
            return self._json({"model_versions": versions})
        if path.endswith("/mlflow/model-versions/get-download-uri"):
            return self._json({"artifact_uri": self.uris[query["version"]]})
        if "/mlflow-artifacts/artifacts" in path:
            rel = unquote(path.split("/mlflow-artifacts/artifacts", 1)[1]).strip("/")
            if not rel:  # a listing
                base = query.get("path", "").strip("/")
                found = [
                    {"path": k.removeprefix(base + "/"), "is_dir": False, "file_size": len(v)}
                    for k, v in self.files.items()
                    if k.startswith(base + "/")
                ]
                return self._json({"files": found})
            data = self.files[rel]
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return None
        self.send_response(404)
        self.end_headers()
        return None


@pytest.fixture
def hostile_server(canary: tuple[Path, bytes]) -> Iterator[tuple[str, dict[str, str]]]:
    outside, _ = canary
    uris = {
        "1": "mlflow-artifacts:/good",
        "2": outside.as_uri(),  # the client's own files, as file://
        "3": os.fspath(outside),  # the same as a plain absolute path
        "4": f"{outside.as_uri()}/sub/../sub",
        "5": "mlflow-artifacts://127.0.0.2:1/good",  # another server than the one asked
    }
    handler = type("H", (_FakeMlflow,), {"uris": uris, "files": {"good/weights.bin": b"good weights"}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", uris
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.mark.slow  # two runs of the CLI, each importing MLflow (~5 s)
def test_a_hostile_mlflow_server_gets_no_local_file_imported(
    repo: Path, hostile_server: tuple[str, dict[str, str]], canary: tuple[Path, bytes]
) -> None:
    """Item 2: only ``mlflow-artifacts:`` URIs of the server asked are downloaded."""
    pytest.importorskip("mlflow")
    url, uris = hostile_server
    env = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    r = cli(repo, "import", "mlflow", "--tracking-uri", url, "--json", code=1, env=env)
    versions = _by_source(json.loads(r.stdout))
    assert versions["evil/1"]["status"] == "imported", versions
    for n in ("2", "3", "4", "5"):
        got = versions[f"evil/{n}"]
        assert got["status"] == "failed" and "refused" in got["detail"], got
        assert uris[n] in got["detail"], got  # reported by name
    assert ModelRegistry(repo).get("evil", "v1.0.0") is not None
    _assert_canary_absent(repo, canary[1])
    text = cli(repo, "import", "mlflow", "--tracking-uri", url, code=1, env=env).stdout
    assert f"evil/2 (refused: download URI {uris['2']}" in text, text


# ----------------------------------------------------------------------------- MLflow sqlite store


def test_a_sqlite_store_is_read_only_below_its_artifact_root(
    repo: Path, tmp_path: Path, canary: tuple[Path, bytes]
) -> None:
    """Item 2 for a local store: a version whose stored location leaves the experiment's
    artifact root (file:// elsewhere, ``..``, a symlink out of the root) is refused."""
    from tests.importers._mlflow_fixture import build_registry

    outside, secret = canary
    b = build_registry(tmp_path / "ml")
    root = tmp_path / "ml" / "artifacts"
    (root / "escape").symlink_to(outside, target_is_directory=True)
    db = sqlite3.connect(b.uri.removeprefix("sqlite:///"))
    (v1,) = db.execute(
        "SELECT storage_location FROM model_versions WHERE name='clf' AND version=1"
    ).fetchone()
    link_inside = Path(unquote(urlsplit(v1).path)) / "weights.bin"
    link_inside.unlink()
    link_inside.symlink_to(outside / "credentials")  # clf v1: a file inside links out
    hostile = {
        ("clf", "2"): outside.as_uri(),
        ("clf", "3"): f"{root.as_uri()}/../outside",
        ("Fraud Detector", "1"): f"{root.as_uri()}/escape",
    }
    with db:
        for (name, n), loc in hostile.items():
            db.execute(
                "UPDATE model_versions SET storage_location=? WHERE name=? AND version=?", (loc, name, n)
            )
    db.close()
    report = ModelRegistry(repo).import_mlflow(tracking_uri=b.uri)
    assert not report.ok
    versions = _by_source(report.to_dict())
    assert versions["clf/1"]["status"] == "failed" and "symlink" in versions["clf/1"]["detail"], versions
    for (name, n), loc in hostile.items():
        got = versions[f"{name}/{n}"]
        assert got["status"] == "failed" and "refused" in got["detail"] and loc in got["detail"], got
    assert versions["Fraud Detector/2"]["status"] == "imported", versions
    assert ModelRegistry(repo).get("fraud-detector", "v2.0.0") is not None
    _assert_canary_absent(repo, secret)


# ----------------------------------------------------------------------------- GTO


def _commit_tree(repo: Path, entries: list[str], parent: str, message: str) -> str:
    """A commit of a tree made by ``git mktree`` from ``ls-tree`` lines (duplicates allowed)."""
    tree = subprocess.run(
        ["git", "mktree", "--missing"],
        cwd=repo,
        input="".join(e + "\n" for e in entries),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return git(repo, "commit-tree", tree, "-p", parent, "-m", message).strip()


def _blob(repo: Path, data: bytes) -> str:
    r = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"], cwd=repo, input=data, capture_output=True, check=True
    )
    return r.stdout.decode().strip()


def _tag(repo: Path, name: str, commit: str) -> None:
    git(repo, "tag", "-a", name, "-m", name, commit)


def _bomb(levels: int = 7, width: int = 10) -> bytes:
    """A billion-laughs artifacts.yaml: ``width**levels`` leaves from a few hundred bytes."""
    lines = ['a0: &a0 ["lol"]']
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]")
    lines.append(f"lol:\n  path: lol.bin\n  labels: *a{levels}")
    return ("\n".join(lines) + "\n").encode()


def _gto_repo(repo: Path, outside: Path, secret: bytes) -> str:
    """A repository whose GTO tags register: good artifacts, a symlink artifact, an absolute
    path, a DVC file served by a committed ``.dvc/cache`` symlink to outside, a billion-laughs
    artifacts.yaml and a tree listing one name both as a file and a directory."""
    md5 = hashlib.md5(secret, usedforsecurity=False).hexdigest()
    fake_cache = outside / "cache" / "files" / "md5" / md5[:2]
    fake_cache.mkdir(parents=True)
    (fake_cache / md5[2:]).write_bytes(secret)
    (repo / "good.bin").write_bytes(b"good weights")
    (repo / "link.bin").symlink_to(outside / "credentials")
    (repo / ".dvc").mkdir()
    (repo / ".dvc" / "cache").symlink_to(outside / "cache", target_is_directory=True)
    (repo / "data.bin.dvc").write_text(f"outs:\n- md5: {md5}\n  size: {len(secret)}\n  path: data.bin\n")
    (repo / "artifacts.yaml").write_text(
        "good:\n  path: good.bin\n"
        "link:\n  path: link.bin\n"
        f"abs:\n  path: {outside / 'credentials'}\n"
        "dvc:\n  path: data.bin\n"
        "clash:\n  path: clash\n"
    )
    git(repo, "add", "good.bin", "link.bin", ".dvc/cache", "data.bin.dvc", "artifacts.yaml")
    git(repo, "commit", "-q", "-m", "models")
    head = git(repo, "rev-parse", "HEAD").strip()
    for name in ("good", "link", "abs", "dvc"):
        _tag(repo, f"{name}@v1.0.0", head)
    # a tree where 'clash' is both a file and a directory (git mktree does not check)
    sub = _commit_tree(repo, [f"100644 blob {_blob(repo, b'x')}\tx"], head, "sub")
    sub_tree = git(repo, "rev-parse", f"{sub}^{{tree}}").strip()
    listing = git(repo, "ls-tree", head).splitlines()
    clash = _commit_tree(
        repo,
        [*listing, f"100644 blob {_blob(repo, b'file')}\tclash", f"040000 tree {sub_tree}\tclash"],
        head,
        "clash",
    )
    _tag(repo, "clash@v1.0.0", clash)
    bomb = _commit_tree(
        repo,
        [
            f"100644 blob {_blob(repo, _bomb())}\tartifacts.yaml",
            f"100644 blob {_blob(repo, b'lol')}\tlol.bin",
        ],
        head,
        "bomb",
    )
    _tag(repo, "lol@v1.0.0", bomb)
    (repo / "good.bin").write_bytes(b"good weights 2")
    git(repo, "add", "good.bin")
    git(repo, "commit", "-q", "-m", "good 2")
    later = git(repo, "rev-parse", "HEAD").strip()
    _tag(repo, "good@v2.0.0", later)
    return head


def test_gto_reads_only_the_tagged_tree(repo: Path, canary: tuple[Path, bytes]) -> None:
    """Items 7 and 11: every hostile version is reported by name and skipped; the good
    versions import; the canary never comes in; the alias bomb costs little memory."""
    pytest.importorskip("yaml")
    outside, secret = canary
    _gto_repo(repo, outside, secret)
    reg = ModelRegistry(repo)
    tracemalloc.start()
    try:
        report = reg.import_gto()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"peak {peak >> 20} MiB"
    versions = {v.key: v for v in report.versions}
    assert versions["good@v1.0.0"].status == "imported" and versions["good@v2.0.0"].status == "imported"
    for key, why in (
        ("link@v1.0.0", "symlink"),
        ("dvc@v1.0.0", "symlink"),
        ("clash@v1.0.0", "both a file and a directory"),
    ):
        assert versions[key].status == "failed" and why in versions[key].detail, versions[key]
    notes = "\n".join(report.notes)
    assert "'abs@v1.0.0'" in notes and "refused" in notes, notes
    assert "'lol@v1.0.0'" in notes and "alias" in notes, notes
    assert reg.get("good", "v2.0.0") is not None
    _assert_canary_absent(repo, secret)


def test_gto_cli_reports_each_refusal_and_exits_1(repo: Path, canary: tuple[Path, bytes]) -> None:
    pytest.importorskip("yaml")
    outside, secret = canary
    _gto_repo(repo, outside, secret)
    r = cli(repo, "import", "gto", "--json", code=1)
    report = json.loads(r.stdout)
    by = _by_source(report)
    assert by["good@v1.0.0"]["status"] == "imported" and by["clash@v1.0.0"]["status"] == "failed"
    assert any("lol@v1.0.0" in n for n in report["notes"])
    text = cli(repo, "import", "gto", code=1).stdout
    assert "clash@v1.0.0" in text and "both a file and a directory" in text, text
    _assert_canary_absent(repo, secret)


def test_a_dvc_directory_listing_bomb_is_refused_in_bounded_memory(repo: Path) -> None:
    """A DVC ``.dir`` listing (JSON, md5-named in the cache) of a few MiB of empty lists
    costs hundreds of MiB once decoded: it is costed before it is parsed, and refused."""
    pytest.importorskip("yaml")
    listing = b"[" + b"[]," * (2 << 20) + b"[]]"
    md5 = hashlib.md5(listing, usedforsecurity=False).hexdigest() + ".dir"
    cached = repo / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    cached.parent.mkdir(parents=True)
    cached.write_bytes(listing)
    (repo / "data.dvc").write_text(f"outs:\n- md5: {md5}\n  path: data\n")
    (repo / "artifacts.yaml").write_text("data:\n  path: data\n")
    (repo / ".gitignore").write_text("/data\n.dvc/cache\n")
    git(repo, "add", "data.dvc", "artifacts.yaml", ".gitignore")
    git(repo, "commit", "-q", "-m", "dvc dir")
    _tag(repo, "data@v1.0.0", git(repo, "rev-parse", "HEAD").strip())
    tracemalloc.start()
    try:
        report = ModelRegistry(repo).import_gto()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20, f"peak {peak >> 20} MiB"
    (v,) = report.versions
    assert v.status == "failed" and "DVC directory listing" in v.detail, v
