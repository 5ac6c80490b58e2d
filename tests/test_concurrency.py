"""Concurrent writers: CAS ref moves with bounded retry never lose an update."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import GIT_ENV, ROOT, git
from uniflow import ModelRegistry

pytestmark = pytest.mark.slow  # several processes racing: skipped by the fast run (pytest -m 'not slow')

PROMOTER = """
import sys
from uniflow import ModelRegistry
reg = ModelRegistry()
me = int(sys.argv[1])
for i in range(int(sys.argv[2])):
    version = "v1.0.0" if (i + me) % 2 else "v1.0.1"
    stage = "staging" if (i * 3 + me) % 2 else "production"
    reg.promote("m", version, stage, reason=f"worker {me} step {i}")
"""

REGISTRAR = """
import sys
from pathlib import Path
from uniflow import ModelRegistry, VersionExistsError
src = Path(sys.argv[1])
try:
    wanted = sys.argv[3] if sys.argv[3] != "-" else None
    v = ModelRegistry().register(model=src, name=sys.argv[2], version=wanted)
    print("OK", v.version)
except VersionExistsError as e:
    print("EXISTS", e)
"""


def _spawn(code: str, cwd: Path, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, **GIT_ENV, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait(procs: list[subprocess.Popen[str]]) -> list[str]:
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        outs.append(out)
    return outs


def test_four_processes_promoting_fifty_times_lose_nothing(registry: ModelRegistry, tmp_path: Path) -> None:
    for i, v in enumerate(("v1.0.0", "v1.0.1")):
        f = tmp_path / f"w{i}.bin"
        f.write_bytes(os.urandom(1000) + bytes([i]))
        registry.register(model=f, name="m", version=v)
    _wait([_spawn(PROMOTER, registry.root, str(w), "50") for w in range(4)])

    history = ModelRegistry(registry.root).history("m")
    promotes = [e for e in history if e.action == "promote"]
    assert len(promotes) == 200
    assert [e.seq for e in history] == list(range(1, len(history) + 1))
    # every worker's every promotion is there, exactly once
    per_worker = Counter((e.reason or "").split(" step ")[0] for e in promotes)
    assert per_worker == {f"worker {w}": 50 for w in range(4)}
    assert len({e.reason for e in promotes}) == 200
    # replaying the events gives the stored state: no update was lost or reordered
    stage_of: dict[str, str] = {}
    for e in history:
        if e.action == "promote":
            assert e.from_stage == stage_of.get(e.version, "development")
            if e.displaced:
                stage_of[e.displaced] = "archived"
            stage_of[e.version] = e.to_stage
    state = registry.repository.lifecycle.state("m")
    assert {v: s for v, s in stage_of.items() if s != "development"} == state.stage_of
    for stage in ("staging", "production"):
        assert len(state.holders(stage)) <= 1
    # stage pointers agree with the lifecycle
    refs = git(registry.root, "for-each-ref", "--format=%(refname) %(objectname)", "refs/uniflow/stages/m")
    pointers = dict(line.split() for line in refs.splitlines())
    for stage in ("staging", "production"):
        holders = state.holders(stage)
        name = f"refs/uniflow/stages/m/{stage}"
        if holders:
            assert pointers[name] == registry.repository.index.tag_sha("m", holders[0])
        else:
            assert name not in pointers
    log = git(registry.root, "log", "--oneline", "refs/uniflow/models/m")
    assert len(log.splitlines()) == len(history)


def test_four_processes_registering_distinct_versions(registry: ModelRegistry, tmp_path: Path) -> None:
    procs = []
    for i in range(4):
        f = tmp_path / f"m{i}.bin"
        f.write_bytes(os.urandom(200_000))
        procs.append(_spawn(REGISTRAR, registry.root, str(f), "m", f"v1.{i}.0"))
    outs = _wait(procs)
    assert all(o.startswith("OK") for o in outs), outs
    reg = ModelRegistry(registry.root)
    assert [v.version for v in reg.list_versions("m")] == ["v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0"]
    assert len([e for e in reg.history("m") if e.action == "register"]) == 4
    for i in range(4):
        assert Path(reg.load("m", f"v1.{i}.0")).read_bytes() == (tmp_path / f"m{i}.bin").read_bytes()


def test_auto_versions_under_contention_are_all_distinct(registry: ModelRegistry, tmp_path: Path) -> None:
    procs = []
    for i in range(4):
        f = tmp_path / f"a{i}.bin"
        f.write_bytes(os.urandom(50_000))
        procs.append(_spawn(REGISTRAR, registry.root, str(f), "auto", "-"))
    outs = _wait(procs)
    versions = sorted(o.split()[1] for o in outs)
    assert len(set(versions)) == 4, outs
    assert len(ModelRegistry(registry.root).list_versions("auto")) == 4


def test_same_version_different_bytes_exactly_one_wins(registry: ModelRegistry, tmp_path: Path) -> None:
    procs = []
    for i in range(2):
        f = tmp_path / f"c{i}.bin"
        f.write_bytes(os.urandom(300_000))
        procs.append(_spawn(REGISTRAR, registry.root, str(f), "race", "v1.0.0"))
    outs = _wait(procs)
    assert sorted(o.split()[0] for o in outs) == ["EXISTS", "OK"], outs
    winner = outs.index(next(o for o in outs if o.startswith("OK")))
    got = Path(ModelRegistry(registry.root).load("race", "v1.0.0")).read_bytes()
    assert got == (tmp_path / f"c{winner}.bin").read_bytes()
