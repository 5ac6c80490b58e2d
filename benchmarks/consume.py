"""A verified ``uniflow get`` against the same get unverified (issue 24: ``get
--require-signed`` <= 1.1x the same get unverified). :func:`bench_consume` feeds ``python -m
benchmarks.run`` (section ``consume``); ``python -m benchmarks.consume [--size 256MiB]
[--events 50] [--pairs 5]`` prints the figures as JSON.

**The remote.** A bare repository served by ``file://`` holds a signed policy on ``main``
(production requires signed events and comes from staging) and model ``clf``: small versions,
each registered, promoted to staging and to production with an SSH Ed25519 signing key, then
the model file (a safetensors file of ``--size``, 256 MiB by default) registered and promoted
the same way, so production holds it at the end of a signed lifecycle of about ``--events``
events (3 per version). Its chunks are pushed to a directory blob remote beside it.

**The unverified get.** A get by URL never takes its signature mode from the remote, and
without ``--require-signed`` it is ``warn`` (it verifies, and only warns) once the remote's
default branch holds a policy. So the unverified get reads a *twin*: a mirror of the same
repository whose ``main`` has one more commit removing the two policy files; its lifecycle,
tags, manifests and blob remote are the same objects, and with no policy a get checks
nothing. Each pair is two whole processes, in an order that alternates from pair to pair:

* verified: ``uniflow get file://SIGNED clf --stage production --require-signed --trust-root
  F -o OUT``;
* unverified: ``uniflow get file://TWIN clf --stage production -o OUT``;

and, reported without a goal, ``warn``: the plain get of the signed remote (what a consumer
who asks for nothing pays once a policy exists).

**Cold and warm.** Cold: every process gets a fresh per-user cache (``UNIFLOW_CACHE_DIR``),
so it fetches the repository, the chunks and (verified) the default branch's history, and
verifies every signature. Warm: the same gets from one per-user cache that already served
each of them once (a verified read of unchanged inputs reuses its kept verdict). OUT is a new
directory every time. The processes keep their bytecode (``PYTHONPYCACHEPREFIX`` under the
work directory, written by the untimed warm-up gets), as an installed package has it.
**The goal is judged on the cold ratio** (``get_require_signed_ratio``,
the median of the per-pair ratios; ``_min`` beside it): a deploy job usually starts from an
empty cache, and the cold get is the one that pays for every check. CPU seconds (user +
system of the process) are reported beside wall time: on a shared machine they are steadier.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.harness import MIB, git_env, log, rmtree, run

#: the three gets of a round: the subject, its peer, and the default (warn) get
VARIANTS = ("verified", "unverified", "warn")
KEYS = [
    "get_require_signed_ratio",
    "get_require_signed_ratio_min",
    "get_require_signed_ratio_warm",
    "get_require_signed_ratio_warm_min",
    "get_require_signed_cpu_ratio",
    "get_require_signed_cpu_ratio_warm",
    "get_warn_ratio",
    "get_warn_ratio_warm",
    *(f"get_{v}_{t}_{u}" for v in VARIANTS for t in ("cold", "warm") for u in ("s", "cpu_s")),
    "consume_events",
    "consume_model_mib",
]
#: issue 24's number, judged by ``benchmarks.report`` on the cold ratio (median of the pairs)
GOALS: list[tuple[str, str, str, float, str]] = [
    (
        "get --require-signed",
        "get_require_signed_ratio",
        "<=",
        1.1,
        "`get --require-signed`, fresh cache <= 1.1x the same get unverified",
    ),
]
#: model size (MiB) and lifecycle length (events) per benchmark mode
SIZE_MIB = {"full": 256, "quick": 256, "smoke": 2}
EVENTS = {"full": 50, "quick": 50, "smoke": 9}
NAME = "clf"


def _git(repo: Path, *args: str) -> str:
    return run(["git", *args], cwd=repo, env=git_env()).stdout


def _signing_clone(base: Path, bare: Path) -> tuple[Path, Path]:
    """A clone of the empty ``bare`` that signs with a new Ed25519 key, and the key."""
    clone, key = base / "publisher", base / "ci"
    _git(base, "clone", "-q", str(bare), str(clone))
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ci", "-f", str(key)])
    config = {"user.name": "CI", "user.email": "ci@example.com", "gpg.format": "ssh"}
    for k, v in {**config, "user.signingKey": str(key)}.items():
        _git(clone, "config", k, v)
    return clone, key


def _commit_policy(clone: Path, key: Path, blobs: Path) -> Path:
    """The blob remote's config and a signed policy on ``main``; returns the trust root (an
    allowed-signers file naming the admin)."""
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
    root = clone.parent / "trust-root"
    root.write_text(f"ci@example.com {pub}\n")
    return root


def _register_lifecycle(clone: Path, model: Path, events: int) -> None:
    """Small versions, then ``model``, each registered and promoted to staging and production
    (signed), until the lifecycle holds about ``events`` events; pushed."""
    from uniflow import ModelRegistry

    with ModelRegistry(clone) as reg:
        small = clone.parent / "small.bin"
        for i in range(max(0, -(-events // 3) - 1)):  # 3 events per version, the model's last
            small.write_bytes(os.urandom(4096) + i.to_bytes(4, "big"))
            v = reg.register(str(small), NAME).version
            reg.promote(NAME, v, "staging")
            reg.promote(NAME, v, "production")
        v = reg.register(str(model), NAME).version
        reg.promote(NAME, v, "staging")
        reg.promote(NAME, v, "production")
        reg.push()


def _twin(base: Path, bare: Path) -> Path:
    """A mirror of ``bare`` whose ``main`` drops the policy files: no policy, the same
    lifecycle, tags and blob remote."""
    twin, work = base / "srv" / "twin.git", base / "twin-work"
    _git(base, "clone", "-q", "--mirror", str(bare), str(twin))
    _git(base, "clone", "-q", str(twin), str(work))
    _git(work, "rm", "-q", ".uniflow/policy.toml", ".uniflow/allowed_signers")
    _git(work, "-c", "user.name=CI", "-c", "user.email=ci@example.com", "commit", "-q", "-m", "no policy")
    _git(work, "push", "-q", "origin", "main")
    rmtree(work)
    return twin


@dataclass
class Published:
    """The signed remote, its policy-less twin and the trust root."""

    signed: str
    twin: str
    trust_root: Path
    size: int
    events: int


def publish(base: Path, model: Path, events: int) -> Published:
    """The remotes of the module docstring, under ``base``."""
    bare, blobs = base / "srv" / "signed.git", base / "srv" / "blobs"
    bare.parent.mkdir(parents=True)
    _git(base, "init", "-q", "--bare", "-b", "main", str(bare))
    clone, key = _signing_clone(base, bare)
    root = _commit_policy(clone, key, blobs)
    saved = os.environ.get("UNIFLOW_CACHE_DIR")
    os.environ["UNIFLOW_CACHE_DIR"] = str(base / "publisher-cache")
    try:
        _register_lifecycle(clone, model, events)
    finally:
        if saved is None:
            os.environ.pop("UNIFLOW_CACHE_DIR", None)
        else:
            os.environ["UNIFLOW_CACHE_DIR"] = saved
    held = _git(clone, "rev-list", "--count", f"refs/uniflow/models/{NAME}").strip()
    rmtree(clone)
    twin = _twin(base, bare)
    return Published(f"file://{bare}", f"file://{twin}", root, model.stat().st_size, int(held))


@dataclass
class Rounds:
    """Wall and CPU seconds of every get, per variant and temperature."""

    cmd: list[str]
    pub: Published
    work: Path
    wall: dict[str, list[float]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=dict)

    def argv(self, variant: str, out: Path) -> list[str]:
        url = self.pub.twin if variant == "unverified" else self.pub.signed
        argv = [*self.cmd, "get", url, NAME, "--stage", "production", "-o", str(out)]
        if variant == "verified":
            argv += ["--require-signed", "--trust-root", str(self.pub.trust_root)]
        return argv

    def get(self, variant: str, cache: Path, out: Path) -> tuple[float, float]:
        """One whole ``uniflow get`` process into ``out`` (removed after): its wall and CPU
        seconds. Checks what it wrote, and that it verified (or did not) as its variant
        should, warning about nothing."""
        env = {**git_env(), "UNIFLOW_CACHE_DIR": str(cache), "PYTHONPYCACHEPREFIX": str(self.work / "pyc")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed package has its bytecode
        cpu = _children_cpu()
        start = time.perf_counter()
        proc = run(self.argv(variant, out), env=env, check=False, timeout=3600)
        took, cpu = time.perf_counter() - start, _children_cpu() - cpu
        if proc.returncode != 0:
            raise RuntimeError(f"{variant} get exited {proc.returncode}: {proc.stderr.strip()[-800:]}")
        got = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        verified = "signatures verified" in proc.stdout
        if got != self.pub.size or verified != (variant == "verified") or "warning" in proc.stderr:
            raise RuntimeError(f"{variant} get: {got} bytes; {proc.stdout!r}; {proc.stderr[-400:]!r}")
        rmtree(out)
        return took, cpu

    def timed(self, variant: str, temp: str) -> Callable[[], None]:
        """One get of ``variant``: ``cold`` from a fresh per-user cache, ``warm`` from the
        shared one."""

        def go() -> None:
            cache = self.work / ("cold-cache" if temp == "cold" else "warm-cache")
            if temp == "cold":
                rmtree(cache)
            took, cpu = self.get(variant, cache, self.work / "out")
            self.wall.setdefault(f"{variant}_{temp}", []).append(took)
            self.cpu.setdefault(f"{variant}_{temp}", []).append(cpu)

        return go

    def round(self, i: int) -> None:
        """Round ``i``: each variant cold, then each warm, in an order rotated by ``i``."""
        for temp in ("cold", "warm"):
            steps = [self.timed(v, temp) for v in VARIANTS]
            n = i % len(steps)
            for step in steps[n:] + steps[:n]:
                step()
        rmtree(self.work / "cold-cache")
        log(
            f"    consume round {i + 1}: "
            + ", ".join(f"{k} {v[-1]:.3f} s ({self.cpu[k][-1]:.3f} CPU-s)" for k, v in self.wall.items())
        )

    def warm_up(self) -> None:
        """Each variant once into the warm cache (not timed)."""
        for v in VARIANTS:
            self.get(v, self.work / "warm-cache", self.work / "out")


def _children_cpu() -> float:
    """CPU seconds (user + system) of the child processes waited for so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure(work: Path, cmd: list[str], model: Path, events: int, pairs: int) -> dict[str, Any]:
    """Publish, warm up, then ``pairs`` interleaved rounds; the raw samples and the counts."""
    pub = publish(work, model, events)
    rounds = Rounds(cmd, pub, work)
    rounds.warm_up()
    for i in range(pairs):
        rounds.round(i)
    return {"wall": rounds.wall, "cpu": rounds.cpu, "events": pub.events, "size": pub.size}


def _ratios(num: list[float], den: list[float]) -> list[float]:
    return [a / b for a, b in zip(num, den, strict=True)]


def record(res: Any, found: dict[str, Any]) -> None:
    """The figures of :data:`KEYS` into ``res`` (a :class:`benchmarks.harness.Results`)."""
    wall, cpu = found["wall"], found["cpu"]
    what = f"`uniflow get` of {found['size'] / MIB:.0f} MiB at the end of {found['events']} signed events"
    for temp, how in (("cold", "fresh per-user cache"), ("warm", "warm per-user cache, new OUT")):
        suffix = "" if temp == "cold" else "_warm"
        r = _ratios(wall[f"verified_{temp}"], wall[f"unverified_{temp}"])
        res.add(
            f"get_require_signed_ratio{suffix}", r, f"{what}, {how}: --require-signed / unverified, per pair"
        )
        res.value(f"get_require_signed_ratio{suffix}_min", round(min(r), 6))
        c = _ratios(cpu[f"verified_{temp}"], cpu[f"unverified_{temp}"])
        res.add(f"get_require_signed_cpu_ratio{suffix}", c, f"the same in CPU seconds ({how})")
        w = _ratios(wall[f"warn_{temp}"], wall[f"unverified_{temp}"])
        res.add(
            f"get_warn_ratio{suffix}", w, f"{what}, {how}: plain get of the signed remote (warn) / unverified"
        )
        for v in VARIANTS:
            res.add(f"get_{v}_{temp}_s", wall[f"{v}_{temp}"], f"{v} get, {how}, wall seconds")
            res.add(f"get_{v}_{temp}_cpu_s", cpu[f"{v}_{temp}"], f"{v} get, {how}, CPU seconds")
    res.value("consume_events", found["events"], "events in the signed lifecycle")
    res.value("consume_model_mib", round(found["size"] / MIB, 3), "size of the production model")


def bench_consume(
    res: Any, cache: Path, work: Path, cmd: list[str], size_mib: int, events: int, pairs: int
) -> None:
    """The consume figures into ``res``: the model file comes from ``cache`` (generated once
    per size), everything else lives under ``work`` and is removed."""
    from benchmarks.modelfile import model_files

    model = model_files(cache, size_mib, kinds=("base",))["base"]
    base = Path(tempfile.mkdtemp(prefix="consume-", dir=work))
    try:
        record(res, measure(base, cmd, model, events, pairs))
    finally:
        rmtree(base)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.consume``: every figure (median, with ``_min``) as JSON."""
    from benchmarks.commands import cli_command
    from benchmarks.harness import Results
    from benchmarks.run import size_mib

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=size_mib, default=SIZE_MIB["full"], help="model size: 64MiB, 1GiB")
    ap.add_argument("--events", type=int, default=EVENTS["full"])
    ap.add_argument("--pairs", type=int, default=5)
    ap.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(os.environ.get("UNIFLOW_BENCH_CACHE", "~/.cache/uniflow-bench")).expanduser(),
    )
    args = ap.parse_args(argv)
    cmd, why = cli_command()
    if cmd is None:
        raise SystemExit(f"no working uniflow CLI: {why}")
    res = Results()
    with tempfile.TemporaryDirectory() as tmp:
        bench_consume(res, args.cache_dir, Path(tmp), cmd, args.size, args.events, args.pairs)
    out = {k: res.values[k] for k in KEYS if k in res.values}
    out["samples"] = {k: v for k, v in res.samples.items() if "ratio" in k}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
