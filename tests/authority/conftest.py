"""Fixtures of the signing tests: SSH keys made by ``ssh-keygen``, allowed-signers files, and
``ssh-keygen``/``ssh-agent`` runs with every wait bounded."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import GIT_ENV, make_repo
from uniflow._authority.allowed_signers import AllowedSigners
from uniflow._authority.sshsig import PublicKey, parse_public_key
from uniflow._records import signedchain

pytest.importorskip("cryptography")
if shutil.which("ssh-keygen") is None:  # the tests check against OpenSSH itself
    pytest.skip("ssh-keygen is not installed", allow_module_level=True)

#: the ``-t``/``-b`` arguments of each key kind
KINDS = {
    "ed25519": ["-t", "ed25519"],
    "ecdsa": ["-t", "ecdsa", "-b", "256"],
    "rsa": ["-t", "rsa", "-b", "3072"],
}


@dataclass(frozen=True)
class Key:
    """A key pair on disk: ``path`` is the private key, ``pub_path`` the ``.pub`` file."""

    path: Path
    public: PublicKey

    @property
    def pub_path(self) -> Path:
        return Path(f"{self.path}.pub")

    @property
    def pub_line(self) -> str:
        return self.pub_path.read_text().strip()


def make_key(directory: Path, name: str, kind: str = "ed25519", passphrase: str = "") -> Key:
    """``ssh-keygen -t KIND`` into ``directory/name``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    args = ["ssh-keygen", "-q", *KINDS.get(kind, ["-t", kind]), "-N", passphrase, "-C", name, "-f", str(path)]
    subprocess.run(args, check=True, timeout=60, capture_output=True)
    return Key(path, parse_public_key(Path(f"{path}.pub").read_text()))


def ssh_keygen(
    *args: str, data: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run ``ssh-keygen ARGS`` with ``data`` on stdin (bounded in time, never raises on failure)."""
    return subprocess.run(
        ["ssh-keygen", *args], input=data, capture_output=True, timeout=60, check=False, env=env
    )


def write_allowed(path: Path, *lines: str) -> Path:
    """An allowed-signers file of ``lines``."""
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    return tmp_path / "keys"


@pytest.fixture(params=["ed25519", "ecdsa"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def key(keydir: Path, kind: str) -> Key:
    """A fresh unencrypted key of each required kind (Ed25519, ECDSA P-256)."""
    return make_key(keydir, f"alice-{kind}", kind)


@pytest.fixture
def agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An ``ssh-agent`` on a socket in ``tmp_path`` (``SSH_AUTH_SOCK`` set); killed after the test."""
    if shutil.which("ssh-agent") is None or shutil.which("ssh-add") is None:
        pytest.skip("ssh-agent is not installed")
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.02)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        yield str(sock)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def git(
    repo: Path, *args: str, data: bytes | None = None, check: bool = True
) -> subprocess.CompletedProcess[bytes]:
    """``git ARGS`` in ``repo`` (bytes in and out, bounded in time)."""
    proc = subprocess.run(["git", *args], cwd=repo, input=data, capture_output=True, timeout=60, check=False)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr.decode()}")
    return proc


@pytest.fixture
def repo(tmp_path: Path, key: Key) -> Path:
    """A repository with one commit whose Git trusts ``key`` for test@example.com
    (``gpg.format=ssh``, ``gpg.ssh.allowedSignersFile``); overrides the suite's ``repo``."""
    repo = make_repo(tmp_path / "repo")
    allowed = write_allowed(tmp_path / "allowed_signers", f"{GIT_ENV['GIT_COMMITTER_EMAIL']} {key.pub_line}")
    git(repo, "config", "gpg.format", "ssh")
    git(repo, "config", "gpg.ssh.allowedSignersFile", str(allowed))
    return repo


def signers_of(repo: Path) -> AllowedSigners:
    path = git(repo, "config", "gpg.ssh.allowedSignersFile").stdout.decode().strip()
    return AllowedSigners.load(path)


def fork_verifiers(mp: pytest.MonkeyPatch) -> None:
    """Make a long chain's signatures verify in forked children for the rest of the test,
    whatever else runs in this test process: a library used by an earlier test in the same
    pytest worker may have left a daemon thread running (tqdm's monitor, fsspec's IO loop),
    and with another thread alive uniflow verifies on threads instead (that choice is checked
    by ``test_verified_on_threads_or_by_a_child_that_fails_the_chain_reads_the_same``).
    Forked verifiers are Linux only: elsewhere the test is skipped."""
    if sys.platform != "linux" or not hasattr(os, "fork"):
        pytest.skip("forked verifiers are Linux only")
    mp.setattr(signedchain, "_can_fork", lambda: True)
