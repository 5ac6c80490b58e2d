"""Helpers (no tests) for the durability tests: commands held or killed at a named point.

A point is one of the names passed to ``uniflow._testhooks.point`` by the library; the
process is held there until the test creates ``go`` (bounded), or killed there with SIGKILL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import GIT_ENV, ROOT

WAIT = 120.0  # seconds a test waits for a held process to reach its point


def _env(extra: dict[str, str]) -> dict[str, str]:
    return {**os.environ, **GIT_ENV, "PYTHONPATH": str(ROOT), "UNIFLOW_FORCE_TTY": "0", **extra}


def start_cli(cwd: Path, *args: str, extra: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``python -m uniflow ARGS`` in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "uniflow", *args],
        cwd=cwd,
        env=_env(extra or {}),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def run_cli(
    cwd: Path, *args: str, extra: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "uniflow", *args],
        cwd=cwd,
        env=_env(extra or {}),
        text=True,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def run_py(
    cwd: Path, code: str, extra: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=_env(extra or {}),
        text=True,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def kill_at(point: str) -> dict[str, str]:
    return {"UNIFLOW_TEST_KILL_AT": point}


class Held:
    """A command held at ``point`` until :meth:`release`."""

    def __init__(self, cwd: Path, gate: Path, point: str, *args: str) -> None:
        gate.mkdir(parents=True, exist_ok=True)
        self.gate = gate
        self.proc = start_cli(
            cwd, *args, extra={"UNIFLOW_TEST_PAUSE_AT": point, "UNIFLOW_TEST_PAUSE_DIR": str(gate)}
        )

    def wait_paused(self) -> None:
        deadline = time.monotonic() + WAIT
        while not (self.gate / "paused").exists():  # bounded by WAIT
            if self.proc.poll() is not None:
                out, err = self.proc.communicate()
                raise AssertionError(
                    f"finished without reaching its point (exit {self.proc.returncode}): {out}{err}"
                )
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError("never reached its point")
            time.sleep(0.02)

    def release(self) -> subprocess.CompletedProcess[str]:
        (self.gate / "go").write_text("go")
        out, err = self.proc.communicate(timeout=300)
        return subprocess.CompletedProcess(self.proc.args, self.proc.returncode, out, err)


def age(paths: list[Path], seconds: float) -> None:
    """Make files look ``seconds`` old."""
    when = time.time() - seconds
    for p in paths:
        os.utime(p, (when, when))


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []
