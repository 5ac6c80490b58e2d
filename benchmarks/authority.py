"""Authority benchmarks: verifying a 10,000-event signed lifecycle, and what signing adds to a
promote (issue 24's numbers: ``verify_lifecycle`` of 10,000 events <= 1 s; signing <= 20 ms
per promote). Run as ``python -m benchmarks.authority [--events N]``; prints JSON.

The lifecycle is written as the objects a promote writes (``state.json``, ``event.json``, a
commit signed with an in-process Ed25519 key as ``git commit -S`` signs it), alternating two
registered versions into production, under a policy that names production's promoters and
requires signatures, so every event is verified and evaluated. Cold: no derived cache;
warm: the second run, from the cache the first one kept.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

KEYS = [
    "verify_10k_cold_s",
    "verify_10k_warm_s",
    "promote_unsigned_ms",
    "promote_signed_ms",
    "sign_overhead_ms",
    "promote_policy_ms",
]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def _setup(base: Path) -> tuple[Path, Path]:
    repo = base / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    _git(repo, "commit", "-q", "--allow-empty", "-m", "start")
    key = base / "ci"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ci", "-f", str(key)], check=True)
    return repo, key


def _commit_policy(repo: Path, key: Path) -> None:
    (repo / ".uniflow").mkdir(exist_ok=True)
    (repo / ".uniflow/policy.toml").write_text(
        '[admins]\nprincipals = ["ci@example.com"]\n'
        '[stages.production]\npromoters = ["ci@example.com"]\nrequire_signed = true\n'
    )
    pub = Path(f"{key}.pub").read_text().strip()
    (repo / ".uniflow/allowed_signers").write_text(f'ci@example.com namespaces="git" {pub}\n')
    _git(repo, "add", ".uniflow/policy.toml", ".uniflow/allowed_signers")
    _git(repo, "-c", "gpg.format=ssh", "-c", f"user.signingKey={key}", "commit", "-q", "-S", "-m", "policy")


def _chain(registry: Any, versions: list[str], events: int) -> None:
    """Append ``events`` signed promote events alternating ``versions`` into production."""
    from uniflow._ops.enforce import configured_signer
    from uniflow._records.lifecycle import LifecycleState
    from uniflow._records.refs import lifecycle_ref

    repo = registry.repository
    git, signer = repo.git, configured_signer(repo)
    head = repo.lifecycle.head("clf")
    state = repo.lifecycle.state("clf")
    tags = {v: repo.index.tag_sha("clf", v) for v in versions}
    for i in range(events):
        version, other = versions[i % 2], versions[(i + 1) % 2]
        before = state.stage(version)
        state = LifecycleState("clf", state.seq + 1, {version: "production", other: "archived"}, {})
        event = {"action": "promote", "version": version, "from": before, "to": "production"}
        event.update(
            seq=state.seq, actor="CI <ci@example.com>", at=datetime.now(UTC).isoformat(), tag=tags[version]
        )
        tree = git.write_tree(
            {
                "event.json": (
                    0o100644,
                    git.write_blob(json.dumps(event, indent=1, sort_keys=True).encode()),
                ),
                "state.json": (0o100644, git.write_blob(state.to_json())),
            }
        )
        message = f"promote clf {version}: {before} -> production\n"
        head = git.write_commit(
            tree, [head] if head else [], message, ("CI", "ci@example.com"), signer=signer
        )
    git.cas_ref(lifecycle_ref("clf"), repo.lifecycle.head("clf"), head)


def _promote_ms(registry: Any, versions: list[str], runs: int = 20) -> float:
    times = []
    for i in range(runs):
        start = time.perf_counter()
        registry.promote("clf", versions[i % 2], "production")
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2] * 1000


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000)
    args = parser.parse_args(argv)
    from uniflow import ModelRegistry
    from uniflow._ops.authority import verify_lifecycle

    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        os.environ["UNIFLOW_CACHE_DIR"] = str(base / "cache")
        repo, key = _setup(base)
        registry = ModelRegistry(repo)
        _git(repo, "config", "gpg.format", "ssh")
        _git(repo, "config", "user.signingKey", str(key))
        versions = []
        for n in range(2):  # signed tags
            (base / f"m{n}.bin").write_bytes(bytes([n]) * 4096)
            versions.append(registry.register(str(base / f"m{n}.bin"), "clf").version)
        _git(repo, "config", "--unset", "user.signingKey")
        unsigned = _promote_ms(registry, versions)  # no key, no policy
        _git(repo, "config", "user.signingKey", str(key))
        signed = _promote_ms(registry, versions)  # in-process key, no policy
        time.sleep(1)  # commit times are seconds: the policy comes after the unsigned promotes
        _commit_policy(repo, key)
        policy = _promote_ms(registry, versions)  # signed and checked against the policy
        time.sleep(1)  # the chain's commits come after the policy's (commit times are seconds)
        _chain(registry, versions, args.events)
        start = time.perf_counter()
        cold = verify_lifecycle(registry.repository, "clf")
        cold_s = time.perf_counter() - start
        start = time.perf_counter()
        warm = verify_lifecycle(registry.repository, "clf")
        warm_s = time.perf_counter() - start
        assert cold.ok and warm.ok and len(warm.events) >= args.events, warm.failures()[:3]
    return {
        "events": float(len(warm.events)),
        "verify_10k_cold_s": cold_s,
        "verify_10k_warm_s": warm_s,
        "promote_unsigned_ms": unsigned,
        "promote_signed_ms": signed,
        "sign_overhead_ms": signed - unsigned,
        "promote_policy_ms": policy,
    }


if __name__ == "__main__":
    json.dump(main(sys.argv[1:]), sys.stdout, indent=1)
    print()
