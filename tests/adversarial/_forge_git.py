"""Helpers (no tests): hostile registry content written with plain Git plumbing.

``git hash-object -w``, ``git mktree``, ``git commit-tree``, ``git mktag`` and
``git update-ref`` only: nothing here goes through uniflow, so whatever uniflow later
reads is exactly what a hostile remote or a tampered clone could hold.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import msgpack

from tests.helpers import GIT_ENV, git

MANIFEST_PATH = ".uniflow/card/manifest.msgpack"


def git_in(cwd: Path, *args: str, data: bytes = b"") -> str:
    """``git ARGS`` in ``cwd`` with ``data`` on stdin; returns stdout (stripped)."""
    r = subprocess.run(
        ["git", *args],
        cwd=cwd,
        input=data,
        capture_output=True,
        timeout=300,
        env={**os.environ, **GIT_ENV},
        check=False,
    )
    if r.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {r.stderr.decode(errors='replace')}")
    return r.stdout.decode().strip()


def blob(repo: Path, data: bytes) -> str:
    return git_in(repo, "hash-object", "-w", "--stdin", data=data)


def tree(repo: Path, entries: dict[str, tuple[str, str]]) -> str:
    """``entries``: name -> (``blob``/``tree``, sha)."""
    lines = "".join(
        f"{'040000' if kind == 'tree' else '100644'} {kind} {sha}\t{name}\n"
        for name, (kind, sha) in entries.items()
    )
    return git_in(repo, "mktree", data=lines.encode())


def pack_manifest(manifest: dict[str, Any]) -> bytes:
    return msgpack.packb(manifest, use_bin_type=True)


def forge_version(repo: Path, model: str, version: str, manifest: dict[str, Any] | bytes) -> str:
    """Create ``refs/tags/models/<model>/<version>``: an annotated tag -> a commit whose tree
    holds ``.uniflow/card/manifest.msgpack`` = ``manifest``. Returns the tag sha."""
    data = manifest if isinstance(manifest, bytes) else pack_manifest(manifest)
    card = tree(repo, {"manifest.msgpack": ("blob", blob(repo, data))})
    dot = tree(repo, {"card": ("tree", card)})
    root = tree(repo, {".uniflow": ("tree", dot)})
    commit = git_in(repo, "commit-tree", root, "-m", f"Register model {model} {version}")
    tag_text = (
        f"object {commit}\ntype commit\ntag models/{model}/{version}\n"
        "tagger Mallory <mallory@example.com> 1700000000 +0000\n\nforged\n"
    )
    tag = git_in(repo, "mktag", data=tag_text.encode())
    git(repo, "update-ref", f"refs/tags/models/{model}/{version}", tag)
    return tag


def forge_event(
    repo: Path,
    model: str,
    state: dict[str, Any] | bytes,
    event: dict[str, Any] | bytes,
    parent: str | None = None,
    *,
    update: bool = True,
) -> str:
    """A lifecycle commit holding ``state.json`` and ``event.json``, on top of ``parent``
    (default: the model's current lifecycle head); moves ``refs/uniflow/models/<model>``."""
    ref = f"refs/uniflow/models/{model}"
    if parent is None:
        parent = git(repo, "rev-parse", "--verify", "-q", ref, check=False).strip() or None

    def enc(v: object) -> bytes:
        return v if isinstance(v, bytes) else (json.dumps(v, indent=1, sort_keys=True) + "\n").encode()

    root = tree(
        repo, {"event.json": ("blob", blob(repo, enc(event))), "state.json": ("blob", blob(repo, enc(state)))}
    )
    args = ["commit-tree", root, "-m", f"promote {model}: forged"]
    if parent:
        args += ["-p", parent]
    commit = git_in(repo, *args)
    if update:
        git(repo, "update-ref", ref, commit)
    return commit


def state_of(
    model: str, seq: int, stage_of: dict[str, str], past: dict[str, list[str]] | None = None
) -> dict[str, Any]:
    return {"format": 1, "model": model, "seq": seq, "stage_of": stage_of, "past": past or {}}


def event_of(
    version: str, to: str, seq: int, action: str = "promote", frm: str | None = "development"
) -> dict[str, Any]:
    return {
        "action": action,
        "version": version,
        "from": frm,
        "to": to,
        "seq": seq,
        "actor": "Mallory <mallory@example.com>",
        "at": "2024-01-01T00:00:00+00:00",
    }


def one_line_error(stderr: str) -> str:
    """The CLI's error: exactly one line starting with ``error:``, no traceback."""
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr and "unexpected" not in stderr, stderr
    return lines[0]
