"""The KServe storage initializer: the ``uniflow://`` URI grammar, and the entrypoint run as a
``ClusterStorageContainer`` runs it (``uniflow storage-initializer SRC_URI DEST_DIR``, a
subprocess) against ``git daemon`` and a directory blob remote on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import GIT_ENV, free_port, publish_registry, tree_bytes
from uniflow import UniflowError
from uniflow.serving.kserve import ServingUri, parse_uniflow_uri, storage_initialize


@pytest.mark.parametrize(
    ("uri", "git_url", "model", "version", "stage"),
    [
        (
            "uniflow://https://github.com/team/repo.git#clf@production",
            "https://github.com/team/repo.git",
            "clf",
            None,
            "production",
        ),
        ("uniflow://file:///srv/repo.git#clf@v1.2.0", "file:///srv/repo.git", "clf", "v1.2.0", None),
        (
            "uniflow://ssh://git@host.example:2222/org/repo.git#my-model.v2@1.2.0-rc.1",
            "ssh://git@host.example:2222/org/repo.git",
            "my-model.v2",
            "1.2.0-rc.1",
            None,
        ),
        (
            "uniflow://git@github.com:team/repo.git#clf@canary",
            "git@github.com:team/repo.git",
            "clf",
            None,
            "canary",
        ),
        # '#' and '@' inside the Git URL need no escaping: the URI splits at its last '#'
        (
            "uniflow://https://bot:tok@host.example/a#b/repo.git#clf@staging",
            "https://bot:tok@host.example/a#b/repo.git",
            "clf",
            None,
            "staging",
        ),
        # percent-escapes reach git as written (git decodes them)
        ("uniflow://file:///srv/a%23b.git#clf@v1.0.0", "file:///srv/a%23b.git", "clf", "v1.0.0", None),
        (
            "UNIFLOW://git://127.0.0.1:9418/r.git#clf@production",
            "git://127.0.0.1:9418/r.git",
            "clf",
            None,
            "production",
        ),
    ],
)
def test_the_uri_grammar(uri: str, git_url: str, model: str, version: str | None, stage: str | None) -> None:
    parsed = parse_uniflow_uri(uri)
    assert parsed == ServingUri(git_url, model, version, stage)
    assert "tok" not in parsed.display  # a token in the Git URL is never shown
    assert parse_uniflow_uri(str(parsed)) == parsed


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("s3://bucket/models/clf", "unsupported URI scheme 's3'"),
        ("hf://org/model", "unsupported URI scheme 'hf'"),
        ("model-registry://clf/v1", "unsupported URI scheme 'model-registry'"),
        ("clf@production", "no scheme"),
        ("uniflow:https://h.example/r.git#clf@production", "must be followed by //"),
        ("uniflow://https://h.example/r.git", "no '#<model>@<stage-or-version>'"),
        ("uniflow://https://h.example/r.git#clf", "no '@<stage-or-version>'"),
        ("uniflow://https://h.example/r.git#clf@", "nothing after '@'"),
        ("uniflow://https://h.example/r.git#clf@v1.2", "'v1.2' is not a semantic version"),
        ("uniflow://https://h.example/r.git#clf@Prod", "neither a stage name nor a version"),
        ("uniflow://https://h.example/r.git#clf@a@b", "more than one '@'"),
        ("uniflow://https://h.example/r.git#Clf@production", "invalid model name"),
        ("uniflow://#clf@production", "no Git URL"),
        ("uniflow://ftp://h.example/r.git#clf@production", "unsupported Git URL scheme 'ftp'"),
        ("uniflow://https://h.example/r .git#clf@production", "spaces or control characters"),
        ("uniflow://https://u:sekrit@h.example/r.git#clf@v1.2", "https://u:***@h.example"),
    ],
)
def test_a_bad_uri_is_one_line(uri: str, message: str) -> None:
    with pytest.raises(UniflowError) as err:
        parse_uniflow_uri(uri)
    text = str(err.value)
    assert message in text and "\n" not in text and "sekrit" not in text


def test_the_library_call_writes_the_verified_files(tmp_path: Path) -> None:
    pub = publish_registry(tmp_path)
    url = f"uniflow://{pub['bare'].as_uri()}#arr@production"
    dest = tmp_path / "mnt" / "models"
    dest.parent.mkdir()
    mv = storage_initialize(url, dest)
    assert (mv.name, mv.version, mv.stage) == ("arr", "v1.0.0", "production")
    assert np.array_equal(np.load(dest / "array.npy"), pub["array"])


def _entrypoint() -> list[str]:
    """``uniflow storage-initializer``, as the image's ENTRYPOINT runs it."""
    script = Path(sys.executable).parent / "uniflow"
    return [
        str(script) if script.exists() else sys.executable,
        *([] if script.exists() else ["-m", "uniflow"]),
    ]


def _kserve(
    cwd: Path, uri: str, dest: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """What KServe runs: the entrypoint with the two arguments of a ClusterStorageContainer."""
    full = {**os.environ, **GIT_ENV, "UNIFLOW_FORCE_TTY": "0", **(env or {})}
    return subprocess.run(
        [*_entrypoint(), "storage-initializer", uri, str(dest)],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _one_line_error(r: subprocess.CompletedProcess[str], code: int, text: str) -> None:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("error: ") and r.stderr.count("\n") == 1, r.stderr
    assert text in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow  # git daemon on loopback
def test_the_entrypoint_as_kserve_runs_it(tmp_path: Path, git_daemon: str, empty_dir: Path) -> None:
    pub = publish_registry(tmp_path)
    base = f"uniflow://{git_daemon}/remote.git"
    blobs = str(pub["blobs"])

    # KServe mounts an empty volume at /mnt/models before the init container starts
    dest = tmp_path / "mnt" / "models"
    dest.mkdir(parents=True)
    r = _kserve(empty_dir, f"{base}#clf@production", dest, env={"UNIFLOW_BLOB": blobs})
    assert r.returncode == 0, r.stderr
    assert tree_bytes(dest) == tree_bytes(pub["v1"])
    assert "clf v1.0.0 (production)" in r.stdout

    # restarted init container: the same files again, nothing else
    r = _kserve(empty_dir, f"{base}#clf@production", dest, env={"UNIFLOW_BLOB": blobs})
    assert r.returncode == 0, r.stderr
    assert tree_bytes(dest) == tree_bytes(pub["v1"])

    # a version, --blob on the command line, DEST_DIR created, --json
    other = tmp_path / "other"
    cmd = [*_entrypoint(), "storage-initializer", f"{base}#clf@v1.1.0", str(other), "--blob", blobs, "--json"]
    out = subprocess.run(
        cmd, cwd=empty_dir, env={**os.environ, **GIT_ENV}, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert (report["name"], report["version"], report["stage"]) == ("clf", "v1.1.0", "development")
    assert tree_bytes(other) == tree_bytes(pub["v2"])

    # with no blob remote given (and a cache that holds no chunk yet) the repository's
    # config names a directory, which a server elsewhere may not: exit 9
    fresh = {"UNIFLOW_CACHE_DIR": str(tmp_path / "fresh-cache")}
    _one_line_error(_kserve(empty_dir, f"{base}#clf@production", tmp_path / "d1", fresh), 9, "--blob")


@pytest.mark.slow  # git daemon on loopback
def test_the_entrypoint_refuses_in_one_line(tmp_path: Path, git_daemon: str, empty_dir: Path) -> None:
    pub = publish_registry(tmp_path)
    base = f"uniflow://{git_daemon}/remote.git"
    env = {"UNIFLOW_BLOB": str(pub["blobs"])}
    dest = tmp_path / "dest"
    _one_line_error(_kserve(empty_dir, "s3://bucket/clf", dest, env), 2, "unsupported URI scheme 's3'")
    _one_line_error(_kserve(empty_dir, f"{base}#clf", dest, env), 2, "malformed URI")
    _one_line_error(_kserve(empty_dir, f"{base}#nope@production", dest, env), 3, "'nope' not found")
    _one_line_error(_kserve(empty_dir, f"{base}#clf@v9.9.9", dest, env), 3, "no version 'v9.9.9'")
    _one_line_error(_kserve(empty_dir, f"{base}#clf@staging", dest, env), 3, "no version in stage 'staging'")
    _one_line_error(_kserve(empty_dir, f"{base}#clf@canary", dest, env), 2, "unknown stage 'canary'")
    closed = f"uniflow://git://127.0.0.1:{free_port()}/remote.git#clf@production"
    _one_line_error(_kserve(empty_dir, closed, dest, env), 9, "cannot read the Git repository")
    assert not dest.exists()  # nothing written on any failure before the files
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_line_error(_kserve(empty_dir, f"{base}#clf@production", blocker, env), 2, "not a directory")
