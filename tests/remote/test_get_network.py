"""Reading a registry by Git URL over the network, all on 127.0.0.1: ``git daemon`` with
``uploadpack.allowFilter`` (as the big hosts have it) and without, a directory blob remote
given with ``--blob``, and moto's S3 server as the blob remote the repository's config names."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import cli, mirror_objects, publish_registry, serve_git_daemon, tree_bytes
from uniflow import ModelRegistry

pytestmark = pytest.mark.slow  # servers on loopback: part of the full run


def _git_commands(trace: Path) -> list[str]:
    """The git sub-commands a run started, from ``GIT_TRACE`` (``trace: built-in: git X``)."""
    out = []
    for line in trace.read_text().splitlines():
        if "trace: built-in: git " in line:
            words = line.split("trace: built-in: git ", 1)[1].split()
            while words and words[0] == "-c":
                words = words[2:]
            out.append(words[0] if words else "")
    return out


def test_get_over_git_daemon_with_a_directory_blob_remote(
    tmp_path: Path, git_daemon: str, empty_dir: Path, cache_dir: Path
) -> None:
    pub = publish_registry(tmp_path)
    url = f"{git_daemon}/remote.git"
    # the repository's config names a directory: a server on another machine may not
    r = cli(empty_dir, "get", url, "clf", "--stage", "production", code=9)
    assert "may not name a local directory" in r.stderr and "--blob" in r.stderr
    r = cli(empty_dir, "get", url, "clf", "--stage", "production", "--blob", str(pub["blobs"]), "--json")
    assert json.loads(r.stdout)["version"] == "v1.0.0"
    assert tree_bytes(empty_dir / "clf") == tree_bytes(pub["v1"])
    r = cli(empty_dir, "get", url, "clf", "v1.1.0", "-o", "v11", "--blob", str(pub["blobs"]))
    assert tree_bytes(empty_dir / "v11") == tree_bytes(pub["v2"])
    objects = mirror_objects(cache_dir)
    assert pub["big_blob"] not in objects and objects

    # nothing changed: one `git ls-remote`, no fetch
    trace = tmp_path / "trace.txt"
    cli(
        empty_dir,
        "get",
        url,
        "clf",
        "v1.1.0",
        "-o",
        "again",
        "--blob",
        str(pub["blobs"]),
        env={"GIT_TRACE": str(trace)},
    )
    assert _git_commands(trace) == ["ls-remote"]

    # a promotion pushed afterwards is seen by the next call (and costs a fetch)
    clone = pub["clone"]
    from tests.helpers import open_registry

    reg = open_registry(clone)
    reg.promote("clf", "v1.1.0", "production")
    reg.push()
    reg.close()
    with ModelRegistry(url, blob=str(pub["blobs"])) as remote:
        assert remote.get("clf", stage="production").version == "v1.1.0"
        import numpy as np

        assert np.array_equal(remote.load("arr", stage="production"), pub["array"])


def test_offline_after_the_server_is_stopped(tmp_path: Path, empty_dir: Path) -> None:
    pub = publish_registry(tmp_path)
    server = serve_git_daemon(tmp_path / "srv")
    base = next(server)
    url = f"{base}/remote.git"
    cli(empty_dir, "get", url, "clf", "-s", "production", "--blob", str(pub["blobs"]))
    with pytest.raises(StopIteration):
        next(server)  # stops the daemon
    r = cli(empty_dir, "get", url, "clf", "-s", "production", "-o", "two", code=9)
    assert "cannot read the Git repository" in r.stderr and r.stderr.count("\n") == 1
    r = cli(empty_dir, "get", url, "clf", "-s", "production", "-o", "two", "--offline", "--json")
    assert json.loads(r.stdout)["version"] == "v1.0.0"  # the chunks are cached: no blob remote needed
    assert tree_bytes(empty_dir / "two") == tree_bytes(pub["v1"])
    r = cli(empty_dir, "--repo", url, "models", "list", code=9)  # --repo URL is online
    assert r.stderr.count("\n") == 1


def test_a_server_without_filters_is_refused_before_any_download(
    tmp_path: Path, git_daemon: str, empty_dir: Path, cache_dir: Path
) -> None:
    pub = publish_registry(tmp_path, allow_filter=False)
    r = cli(empty_dir, "get", f"{git_daemon}/remote.git", "clf", "--blob", str(pub["blobs"]), code=9)
    assert "does not allow partial fetches" in r.stderr and "uploadpack.allowFilter" in r.stderr
    assert r.stderr.count("\n") == 1
    assert pub["big_blob"] not in mirror_objects(cache_dir)
    assert not (empty_dir / "clf").exists()


def test_get_over_git_daemon_with_s3_blob_remote(
    tmp_path: Path, git_daemon: str, s3: str, empty_dir: Path, cache_dir: Path
) -> None:
    pub = publish_registry(tmp_path, blob_url="s3://models/team")  # endpoint from AWS_ENDPOINT_URL
    url = f"{git_daemon}/remote.git"
    r = cli(empty_dir, "get", url, "clf", "--stage", "production", "--json")
    report = json.loads(r.stdout)
    assert report["version"] == "v1.0.0" and len(report["files"]) == 3
    assert tree_bytes(empty_dir / "clf") == tree_bytes(pub["v1"])
    assert pub["big_blob"] not in mirror_objects(cache_dir)
    # a chunk corrupted in the bucket is rejected, and DIR never appears
    import blake3
    import boto3

    from uniflow._storage.packs import PackIndex

    data = sorted(tree_bytes(pub["v2"]).items())[0][1]
    digest = blake3.blake3(data).hexdigest()
    client = boto3.client("s3", endpoint_url=s3, region_name="us-east-1")
    listed = client.list_objects_v2(Bucket="models", Prefix="team/packs/")["Contents"]
    for key in sorted(o["Key"] for o in listed if o["Key"].endswith(".pack")):  # the pack holding it
        pack = bytearray(client.get_object(Bucket="models", Key=key)["Body"].read())
        raw = client.get_object(Bucket="models", Key=key[: -len(".pack")] + ".idx")["Body"].read()
        entry = PackIndex.parse(raw, len(pack), key.rsplit("/", 1)[-1][:64]).lookup(digest)
        if entry is not None:
            pack[entry.offset] ^= 0xFF  # tampered in the bucket
            client.put_object(Bucket="models", Key=key, Body=bytes(pack))
    r = cli(empty_dir, "get", url, "clf", "v1.1.0", "-o", "bad", code=5)
    assert "corrupted" in r.stderr and not (empty_dir / "bad").exists()
    # an unreachable bucket endpoint: one line, exit 9
    r = cli(
        empty_dir,
        "get",
        url,
        "clf",
        "v1.1.0",
        "-o",
        "bad",
        code=9,
        env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"},
    )
    assert r.stderr.count("\n") == 1 and not (empty_dir / "bad").exists()
    assert os.listdir(empty_dir) == ["clf"]
