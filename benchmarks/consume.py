"""A verified read against the same read unverified (issue 24: ``get --require-signed`` <= 1.1x
the same get unverified). Run as ``python -m benchmarks.consume [--versions N] [--runs R]``;
prints JSON.

A bare repository served by ``file://`` holds a signed policy on main and model ``clf`` with
``N`` small versions, each registered, promoted to staging and to production through uniflow
with an SSH signing key (3 events per version: about 100 events for N=34). Each run opens
``RemoteRegistry(url, signatures=MODE)`` on the warm per-user cache, resolves the production
holder (verified under ``require``) and exports its files into a new directory, as ``uniflow
get`` does; the two modes alternate, ``--runs`` times each. The first verified read on a fresh
cache (which also fetches the default branch's history) is reported apart.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def _publish(base: Path, versions: int) -> str:
    """The bare repository described in the module; returns its ``file://`` URL."""
    from uniflow import ModelRegistry

    bare, clone, blobs = base / "srv" / "remote.git", base / "clone", base / "srv" / "blobs"
    bare.parent.mkdir(parents=True)
    _git(base, "init", "-q", "--bare", "-b", "main", str(bare))
    _git(base, "clone", "-q", str(bare), str(clone))
    key = base / "ci"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ci", "-f", str(key)], check=True)
    for k, v in {"user.name": "CI", "user.email": "ci@example.com", "gpg.format": "ssh"}.items():
        _git(clone, "config", k, v)
    _git(clone, "config", "user.signingKey", str(key))
    (clone / ".uniflow").mkdir()
    (clone / ".uniflow/config.toml").write_text(f'[remotes.origin]\nurl = "{blobs}"\n')
    (clone / ".uniflow/policy.toml").write_text(
        '[admins]\nprincipals = ["ci@example.com"]\n[stages.staging]\npromoters = ["ci@example.com"]\n'
        '[stages.production]\nfrom = ["staging"]\npromoters = ["ci@example.com"]\nrequire_signed = true\n'
    )
    pub = Path(f"{key}.pub").read_text().strip()
    (clone / ".uniflow/allowed_signers").write_text(f'ci@example.com namespaces="git" {pub}\n')
    _git(clone, "add", ".uniflow")
    _git(clone, "commit", "-q", "-S", "-m", "policy")
    _git(clone, "push", "-q", "origin", "main")
    reg = ModelRegistry(clone)
    for i in range(versions):
        model = base / f"m{i}.bin"
        model.write_bytes(os.urandom(64 << 10))
        v = reg.register(str(model), "clf").version
        reg.promote("clf", v, "staging")
        reg.promote("clf", v, "production")
    reg.push()
    reg.close()
    return f"file://{bare}"


def _read(url: str, mode: str, out: Path) -> float:
    from uniflow import RemoteRegistry

    t = time.perf_counter()
    with RemoteRegistry(url, signatures=mode) as registry:
        mv = registry.get("clf", stage="production")
        registry.export("clf", out, version=mv.version, signatures="off")  # checked by get
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--versions", type=int, default=34)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        os.environ["UNIFLOW_CACHE_DIR"] = str(base / "cache")
        url = _publish(base, args.versions)
        first = _read(url, "require", base / "first")  # a fresh cache: sync + history fetch
        _read(url, "off", base / "warm")
        times: dict[str, list[float]] = {"off": [], "require": []}
        for i in range(args.runs):
            for mode in ("off", "require"):
                times[mode].append(_read(url, mode, base / f"{mode}-{i}"))
    result: dict[str, Any] = {"events": 3 * args.versions, "first_verified_read_s": round(first, 4)}
    for mode, ts in times.items():
        result[f"{mode}_min_s"] = round(min(ts), 4)
        result[f"{mode}_median_s"] = round(statistics.median(ts), 4)
    result["ratio_min"] = round(min(times["require"]) / min(times["off"]), 3)
    result["ratio_median"] = round(statistics.median(times["require"]) / statistics.median(times["off"]), 3)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
