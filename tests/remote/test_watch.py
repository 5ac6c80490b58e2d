"""``uniflow watch URL NAME --stage STAGE --exec CMD`` (issue 26, item 1): polls a registry
read by URL (git daemon on 127.0.0.1, a directory blob remote) and runs CMD with the new
holder's verified files whenever the holder changes; bounded against a server that never
answers; stopped cleanly by SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import GIT_ENV, ROOT, cli, open_registry, tree_bytes
from tests.test_network_bounds import BlackHole

pytestmark = pytest.mark.slow  # servers on loopback: part of the full run

#: CMD: records its environment and the files it was given, as JSON lines
RECORD = (
    "import json, os, sys; from pathlib import Path; d = Path(os.environ['UNIFLOW_DIR']); "
    "keys = ('UNIFLOW_MODEL', 'UNIFLOW_VERSION', 'UNIFLOW_STAGE', 'UNIFLOW_DIR'); "
    "env = {k: v for k, v in os.environ.items() if k in keys}; "
    "files = {p.name: p.read_bytes().hex() for p in sorted(d.iterdir())}; "
    "open(sys.argv[1], 'a').write(json.dumps({'env': env, 'files': files}) + '\\n'); "
    "sys.exit(int(sys.argv[2]) if len(sys.argv) > 2 else 0)"
)


def _watch(cwd: Path, url: str, blobs: Path, log: Path, *extra: str, code: int | None = 0) -> Any:
    cmd = f"{sys.executable} -c {json.dumps(RECORD)} {log} {' '.join(extra)}"
    return cli(cwd, "watch", url, "clf", "--stage", "production", "--exec", cmd, "--once", "-o", "deployed",
               "--blob", str(blobs), code=code)  # fmt: skip


def _runs(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_watch_runs_cmd_with_the_verified_holder_only_when_it_changes(
    tmp_path: Path, git_daemon: str, published: dict[str, Any], empty_dir: Path
) -> None:
    url = f"{git_daemon}/remote.git"
    log = tmp_path / "runs.jsonl"
    _watch(empty_dir, url, published["blobs"], log)
    (run,) = _runs(log)
    dest = empty_dir / "deployed" / "v1.0.0"
    assert run["env"] == {
        "UNIFLOW_MODEL": "clf",
        "UNIFLOW_VERSION": "v1.0.0",
        "UNIFLOW_STAGE": "production",
        "UNIFLOW_DIR": str(dest),
    }
    assert {k: bytes.fromhex(v) for k, v in run["files"].items()} == tree_bytes(published["v1"])
    assert tree_bytes(dest) == tree_bytes(published["v1"])

    _watch(empty_dir, url, published["blobs"], log)  # holder unchanged: CMD not run
    assert len(_runs(log)) == 1

    reg = open_registry(published["clone"])  # a promotion, pushed: the holder changes
    reg.promote("clf", "v1.1.0", "production")
    reg.push()
    reg.close()
    _watch(empty_dir, url, published["blobs"], log)
    runs = _runs(log)
    assert len(runs) == 2 and runs[1]["env"]["UNIFLOW_VERSION"] == "v1.1.0"
    assert tree_bytes(empty_dir / "deployed" / "v1.1.0") == tree_bytes(published["v2"])


def test_a_failing_cmd_is_reported_and_its_code_returned_with_once(
    tmp_path: Path, git_daemon: str, published: dict[str, Any], empty_dir: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    r = _watch(empty_dir, f"{git_daemon}/remote.git", published["blobs"], log, "7", code=7)
    assert "exited with 7" in r.stderr and r.stderr.count("\n") == 1
    assert len(_runs(log)) == 1
    # handled: the next poll of the same holder does not run it again
    _watch(empty_dir, f"{git_daemon}/remote.git", published["blobs"], log)
    assert len(_runs(log)) == 1


def test_watch_refuses_bad_arguments_in_one_line(tmp_path: Path, empty_dir: Path) -> None:
    for args, code in [
        (["--interval", "0.5"], 2),
        (["--exec", ""], 2),
    ]:
        full = ["watch", str(tmp_path / "x.git"), "clf", "--stage", "production", "--exec", "true", *args]
        r = cli(empty_dir, *full, code=code)
        assert r.stderr.count("\n") == 1, r.stderr
    r = cli(
        empty_dir, "watch", "not a url", "clf", "--stage", "production", "--exec", "true", "--once", code=2
    )
    assert r.stderr.count("\n") == 1


def test_a_server_that_never_answers_fails_the_poll_in_bounded_time(
    tmp_path: Path, empty_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("UNIFLOW_GIT_STALL_TIMEOUT", "2")
    hole = BlackHole()
    try:
        start = time.monotonic()
        url = f"http://127.0.0.1:{hole.port}/remote.git"
        r = cli(
            empty_dir,
            "watch",
            url,
            "clf",
            "--stage",
            "production",
            "--exec",
            "true",
            "--once",
            code=9,
            timeout=90,
        )
        assert time.monotonic() - start < 3 * 2 + 12
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("error:")
        assert hole.accepted
    finally:
        hole.close()


def test_sigterm_stops_the_watcher_between_polls(
    tmp_path: Path, git_daemon: str, published: dict[str, Any], empty_dir: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    cmd = f"{sys.executable} -c {json.dumps(RECORD)} {log}"
    args = ["watch", f"{git_daemon}/remote.git", "clf", "-s", "production", "--exec", cmd, "--interval", "30"]
    env = {**os.environ, **GIT_ENV, "PYTHONPATH": str(ROOT), "UNIFLOW_FORCE_TTY": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uniflow", *args, "-o", "deployed", "--blob", str(published["blobs"])],
        cwd=empty_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _runs(log) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(_runs(log)) == 1  # the first poll ran CMD; now it sleeps 30 s
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)  # well before the next poll
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_the_watcher_goes_on_after_a_failing_cmd(
    tmp_path: Path, git_daemon: str, published: dict[str, Any], empty_dir: Path
) -> None:
    log = tmp_path / "runs.jsonl"
    cmd = f"{sys.executable} -c {json.dumps(RECORD)} {log} 3"  # always exits 3
    args = ["watch", f"{git_daemon}/remote.git", "clf", "-s", "production", "--exec", cmd, "--interval", "1"]
    env = {**os.environ, **GIT_ENV, "PYTHONPATH": str(ROOT), "UNIFLOW_FORCE_TTY": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uniflow", *args, "-o", "deployed", "--blob", str(published["blobs"])],
        cwd=empty_dir, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _runs(log) and time.monotonic() < deadline:
            time.sleep(0.1)
        reg = open_registry(published["clone"])
        reg.promote("clf", "v1.1.0", "production")
        reg.push()
        reg.close()
        while len(_runs(log)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [r["env"]["UNIFLOW_VERSION"] for r in _runs(log)] == ["v1.0.0", "v1.1.0"]
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0
    assert err.count("exited with 3") == 2 and "Traceback" not in err
