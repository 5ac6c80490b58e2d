"""docs/deploy.md's recipes, checked: the ClusterStorageContainer and InferenceService
manifests, the URI table, the storage initializer's Dockerfile, its GIT_ASKPASS script run by
git against a token-protected HTTP Git server on 127.0.0.1, and the example config.pbtxt."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.gitserver import serve_git_http
from tests.helpers import GIT_ENV, publish_registry, tree_bytes
from tests.serving.tritonproto import DATA_TYPES, parse_config
from uniflow.serving.kserve import parse_uniflow_uri

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "deploy.md").read_text()
DOCKERFILE = ROOT / "docs" / "deploy" / "Dockerfile.storage-initializer"
ASKPASS = ROOT / "docs" / "deploy" / "uniflow-git-askpass"


def _blocks(lang: str) -> list[str]:
    """The fenced blocks of docs/deploy.md whose info string is ``lang`` ("" for none)."""
    out: list[str] = []
    opened: str | None = None  # the info string of the block being read
    lines: list[str] = []
    for line in DOC.splitlines():
        if opened is None and line.startswith("```"):
            opened, lines = line[3:].strip(), []
        elif opened is not None and line == "```":
            if opened == lang:
                out.append("\n".join(lines) + "\n")
            opened = None
        elif opened is not None:
            lines.append(line)
    return out


def _manifest(kind: str) -> dict[str, Any]:
    docs = [yaml.safe_load(b) for b in _blocks("yaml")]
    (found,) = [d for d in docs if isinstance(d, dict) and d.get("kind") == kind]
    return found


def test_the_cluster_storage_container_matches_uniflow_uris() -> None:
    csc = _manifest("ClusterStorageContainer")
    assert csc["apiVersion"] == "serving.kserve.io/v1alpha1"
    container = csc["spec"]["container"]
    assert container["name"] == "storage-initializer"  # what KServe looks the init container up by
    assert "args" not in container and "command" not in container  # KServe passes the two arguments
    env = {e["name"]: e for e in container["env"]}
    assert set(env) >= {"UNIFLOW_BLOB", "UNIFLOW_GIT_TOKEN"}
    assert "value" not in env["UNIFLOW_GIT_TOKEN"]  # from a Secret, never inline
    assert csc["spec"]["supportedUriFormats"] == [{"prefix": "uniflow://"}]
    isvc = _manifest("InferenceService")
    uri = isvc["spec"]["predictor"]["model"]["storageUri"]
    assert uri.startswith("uniflow://")
    assert parse_uniflow_uri(uri).stage == "production"


def test_the_uri_table_says_what_the_parser_does() -> None:
    rows = re.findall(r"^\| `(uniflow://[^`]+)` \| `([^`]+)` \| `([^`]+)` \| (.+?) \|$", DOC, re.MULTILINE)
    assert len(rows) == 5
    for uri, git_url, model, selects in rows:
        parsed = parse_uniflow_uri(uri)
        assert (parsed.git_url, parsed.model) == (git_url, model)
        which = f"version `{parsed.version}`" if parsed.version else f"stage `{parsed.stage}`"
        assert selects.endswith(which), (uri, selects)


def test_the_dockerfile_copies_the_checkout_and_runs_the_entrypoint() -> None:
    text = DOCKERFILE.read_text()
    entry = re.findall(r"^ENTRYPOINT (.+)$", text, re.MULTILINE)
    assert entry == ['["uniflow", "storage-initializer"]']
    for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.MULTILINE):
        for src in line.split()[:-1]:
            assert (ROOT / src).exists(), src  # the build context is the checkout's root
    # the wheel stage copies what the packaging test builds the wheel from
    assert "COPY pyproject.toml README.md LICENSE ./" in text and "COPY uniflow ./uniflow" in text
    assert "GIT_ASKPASS=/usr/local/bin/uniflow-git-askpass" in text
    assert "COPY docs/deploy/uniflow-git-askpass /usr/local/bin/uniflow-git-askpass" in text
    assert re.search(r"^USER 1000$", text, re.MULTILINE)
    assert os.access(ASKPASS, os.X_OK)


def _initializer(cwd: Path, uri: str, dest: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **GIT_ENV, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_ASKPASS": str(ASKPASS), **env}
    if "UNIFLOW_GIT_TOKEN" not in env:
        full.pop("UNIFLOW_GIT_TOKEN", None)
    cmd = [sys.executable, "-m", "uniflow", "storage-initializer", uri, str(dest)]
    return subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow  # an HTTP Git server on loopback
def test_the_askpass_script_gives_git_the_token_from_the_environment(tmp_path: Path) -> None:
    pub = publish_registry(tmp_path)
    blob = {"UNIFLOW_BLOB": str(pub["blobs"])}
    with serve_git_http(pub["bare"].parent, "x-access-token", "tok-SECRET") as (server, _handler):
        uri = f"uniflow://{server}/remote.git#clf@production"
        ok = _initializer(tmp_path, uri, tmp_path / "dest", {**blob, "UNIFLOW_GIT_TOKEN": "tok-SECRET"})
        assert ok.returncode == 0, ok.stderr
        assert tree_bytes(tmp_path / "dest") == tree_bytes(pub["v1"])
        env = {**blob, "UNIFLOW_CACHE_DIR": str(tmp_path / "c2"), "UNIFLOW_GIT_TOKEN": "revoked"}
        bad = _initializer(tmp_path, uri, tmp_path / "d2", env)
        unset = _initializer(
            tmp_path, uri, tmp_path / "d3", {**blob, "UNIFLOW_CACHE_DIR": str(tmp_path / "c3")}
        )
    for r in (bad, unset):
        assert r.returncode == 9 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
        assert "tok-SECRET" not in r.stderr and "revoked" not in r.stderr
    assert not (tmp_path / "d2").exists() and not (tmp_path / "d3").exists()


def test_the_example_config_is_a_triton_config() -> None:
    (example,) = [b for b in _blocks("") if "platform:" in b]
    config = parse_config(example)
    assert (config.name, config.platform, config.max_batch_size) == ("clf", "onnxruntime_onnx", 0)
    assert list(config.version_policy.specific.versions) == [3]
    assert [DATA_TYPES[t.data_type] for t in (*config.input, *config.output)] == ["TYPE_FP32", "TYPE_FP32"]
