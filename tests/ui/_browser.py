"""Helpers (no tests) for the UI tests: the ``uniflow ui`` server as a subprocess, and
Debian's Chromium driven by Playwright (never Playwright's own browser download)."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def browser_missing() -> str | None:
    """Why the browser tests cannot run here (None when they can)."""
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        return "Debian's chromium is not installed (apt-get install -y chromium; .ci/run does it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -r requirements-dev.lock)"
    return None


def launch(playwright: Any) -> Any:
    """Debian's Chromium, headless, through Playwright."""
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    return playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, timeout=60_000)


@contextlib.contextmanager
def ui_server(repo: Path, *extra: str, timeout: float = 60) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``uniflow ui --port 0`` in ``repo`` on a free loopback port; yields (url, process) and stops it."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "UNIFLOW_FORCE_TTY": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "uniflow", "ui", "--port", "0", *extra],
        cwd=repo,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + timeout
        line = ""
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if line or proc.poll() is not None:
                break
        match = re.search(r"http://\S+/", line)
        if not match:
            err = proc.stderr.read() if proc.poll() is not None and proc.stderr else ""
            raise AssertionError(f"uniflow ui printed no URL: {line!r} {err}")
        yield match.group(0), proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def run_cli(cwd: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m uniflow ARGS`` in ``cwd`` (plain output)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "UNIFLOW_FORCE_TTY": "0"}
    return subprocess.run(
        [sys.executable, "-m", "uniflow", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def http(
    url: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], str]:
    """One request to the test server: (status, headers, body); error statuses are returned too."""
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        url, method=method, headers=headers or {}, data=b"x=1" if method in ("POST", "PUT", "PATCH") else None
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, err.read().decode()
