"""Crash ordering (issue 9, item 7): stage pointers pushed are derived from the lifecycle
pushed, and a version's register event is never lost.

Crashes are real SIGKILLs at named points (``UNIFLOW_TEST_KILL_AT``), pushes go to a real
bare repository, and what the remote holds is read back with plain ``git``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.adversarial._inflight import Held, kill_at, run_cli, run_py
from tests.helpers import cli, clone, git, model_dir, shared_setup, tree_bytes
from uniflow import ModelRegistry


# ---------------------------------------------------------------------- stage pointers
def _remote_pointers(bare: Path, model: str) -> dict[str, str]:
    out = git(bare, "for-each-ref", "--format=%(refname) %(objectname)", f"refs/uniflow/stages/{model}")
    return {line.split()[0].rsplit("/", 1)[1]: line.split()[1] for line in out.splitlines()}


def _assert_remote_consistent(bare: Path, model: str) -> dict[str, str]:
    """Every remote stage pointer names the tag of the holder the remote lifecycle names."""
    state = json.loads(git(bare, "show", f"refs/uniflow/models/{model}:state.json"))
    holders = {s: v for v, s in state["stage_of"].items() if s in ("staging", "production")}
    wanted = {s: git(bare, "rev-parse", f"refs/tags/models/{model}/{v}").strip() for s, v in holders.items()}
    assert _remote_pointers(bare, model) == wanted, (
        f"remote pointers disagree with the remote lifecycle {holders}"
    )
    return holders


def _registered(tmp_path: Path, a: Path, n: int) -> list[Path]:
    srcs = []
    for i in range(n):
        src = model_dir(tmp_path / f"src{i}", 2, size=4096, seed=10 + i)
        cli(a, "models", "register", str(src), "--name", "m", "--version", f"v1.{i}.0")
        srcs.append(src)
    return srcs


def _crash_after_cas(a: Path, version: str) -> None:
    """Promote ``version`` to production, killed between the lifecycle CAS and the pointers."""
    r = run_cli(
        a, "models", "promote", "m", version, "--to", "production", extra=kill_at("after-lifecycle-cas")
    )
    assert r.returncode == -9, r.stderr
    assert ModelRegistry(a).repository.lifecycle.state("m").stage_of.get(version) == "production"


@pytest.mark.slow
def test_push_after_a_crash_between_cas_and_pointers_publishes_the_lifecycle_holder(tmp_path: Path) -> None:
    bare, a = shared_setup(tmp_path)
    _registered(tmp_path, a, 4)
    cli(a, "models", "promote", "m", "v1.0.0", "--to", "production")
    cli(a, "push")
    _crash_after_cas(a, "v1.3.0")
    stale = git(a, "rev-parse", "refs/uniflow/stages/m/production").strip()
    assert stale == git(a, "rev-parse", "refs/tags/models/m/v1.0.0").strip()  # the crash left it stale

    cli(a, "push")
    assert _assert_remote_consistent(bare, "m") == {"production": "v1.3.0"}
    # the local pointer is repaired too
    assert (
        git(a, "rev-parse", "refs/uniflow/stages/m/production").strip()
        == git(a, "rev-parse", "refs/tags/models/m/v1.3.0").strip()
    )


@pytest.mark.slow
def test_push_killed_midway_leaves_the_remote_consistent_and_a_rerun_completes(tmp_path: Path) -> None:
    bare, a = shared_setup(tmp_path)
    _registered(tmp_path, a, 2)
    cli(a, "models", "promote", "m", "v1.0.0", "--to", "production")
    cli(a, "push")
    big = model_dir(tmp_path / "big", 12, seed=30)
    cli(a, "models", "register", str(big), "--name", "m", "--version", "v1.2.0")
    _crash_after_cas(a, "v1.1.0")  # the last write: nothing repairs the local pointer before the push

    # killed while uploading chunks: no ref moved on the remote
    r = run_py(
        a,
        "from uniflow import ModelRegistry; ModelRegistry('.').push(jobs=2)",
        extra={"UNIFLOW_TEST_KILL_AFTER_UPLOADS": "3"},
    )
    assert r.returncode == -9, r.stderr
    assert _assert_remote_consistent(bare, "m") == {"production": "v1.0.0"}
    # killed right after git push, before the local bookkeeping
    r = run_cli(a, "push", extra=kill_at("push-after-git-push"))
    assert r.returncode == -9, r.stderr
    assert _assert_remote_consistent(bare, "m") == {"production": "v1.1.0"}
    # a re-run completes and changes nothing on the remote
    cli(a, "push")
    assert _assert_remote_consistent(bare, "m") == {"production": "v1.1.0"}
    b = clone(bare, tmp_path / "b")
    cli(b, "pull")
    assert tree_bytes(ModelRegistry(b).load_path("m", "v1.2.0")) == tree_bytes(big)
    cli(b, "verify")


# ---------------------------------------------------------------------- register events
def _register_events(repo: Path, model: str) -> list[str]:
    subjects = git(repo, "log", "--format=%s", f"refs/uniflow/models/{model}").splitlines()
    return sorted(s.split()[2].rstrip(":") for s in subjects if s.startswith(f"register {model} "))


def test_a_register_killed_before_its_event_is_repaired_by_the_next_register(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = model_dir(tmp_path / "first", 2, seed=40)
    src = model_dir(tmp_path / "src", 3, seed=41)
    cli(repo, "models", "register", str(first), "--name", "m", "--version", "v1.0.0")
    r = run_cli(
        repo,
        "models",
        "register",
        str(src),
        "--name",
        "m",
        "--version",
        "v1.1.0",
        extra=kill_at("register-before-event"),
    )
    assert r.returncode == -9, r.stderr
    git(repo, "rev-parse", "--verify", "refs/tags/models/m/v1.1.0")  # the version exists ...
    assert _register_events(repo, "m") == ["v1.0.0"]  # ... without its register event

    # a tag this young may belong to a register in flight: not reported yet
    assert ModelRegistry(repo).verify().problems == ()
    import uniflow._ops.maintenance as maintenance

    monkeypatch.setattr(maintenance, "REGISTER_EVENT_WINDOW", 0.0, raising=False)
    problems = ModelRegistry(repo).verify().problems

    rerun = cli(repo, "models", "register", str(src), "--name", "m", "--version", "v1.1.0")
    assert "Registered" in rerun.stdout
    assert _register_events(repo, "m") == ["v1.0.0", "v1.1.0"]
    cli(repo, "models", "register", str(src), "--name", "m", "--version", "v1.1.0")
    assert _register_events(repo, "m") == ["v1.0.0", "v1.1.0"]  # exactly once
    assert [(p.version, p.problem.split(" (")[0]) for p in problems] == [("v1.1.0", "no register event")]
    assert ModelRegistry(repo).verify().problems == ()


def test_two_registers_of_the_same_bytes_record_one_event(repo: Path, tmp_path: Path) -> None:
    src = model_dir(tmp_path / "src", 3, seed=42)
    args = ("models", "register", str(src), "--name", "m", "--version", "v1.0.0")
    one = Held(repo, tmp_path / "g1", "register-before-event", *args)
    one.wait_paused()  # its tag exists, its event is not written yet
    two = Held(repo, tmp_path / "g2", "register-before-event", *args)
    two.wait_paused()  # found the same version, same bytes
    (two.gate / "go").write_text("go")
    results = [one.release(), two.release()]
    assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
    assert _register_events(repo, "m") == ["v1.0.0"]
    history = [e.action for e in ModelRegistry(repo).history("m")]
    assert history == ["register"]
