"""Fixtures of the OCI tests: Debian's ``docker-registry`` (the CNCF distribution registry)
serving plain HTTP on 127.0.0.1, started and stopped here with every wait bounded, and
``skopeo`` to inspect what uniflow pushed with a client of its own. Each is skipped, with
the reason, where its binary is absent (``apt-get install docker-registry skopeo``)."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import free_port, wait_port

_UPLOAD = re.compile(
    r'"PUT /v2/(?P<repo>[^ ]+)/blobs/uploads/[^ ]*digest=sha256%3A(?P<hex>[0-9a-f]{64})[^ ]* HTTP'
)


@dataclass
class OciRegistry:
    """A running registry: ``host`` is ``127.0.0.1:PORT``; ``storage`` its blob store."""

    host: str
    log: Path
    storage: Path

    def url(self, repository: str, tag: str | None = None) -> str:
        return f"oci://{self.host}/{repository}" + (f":{tag}" if tag else "")

    def uploads(self, repository: str) -> list[str]:
        """sha256 hex digests of the blob uploads the registry completed into ``repository``,
        in order, from its access log."""
        text = self.log.read_text(errors="replace")
        return [m["hex"] for m in _UPLOAD.finditer(text) if m["repo"] == repository]

    def blob_file(self, digest: str) -> Path:
        """Where the registry's filesystem driver keeps blob ``sha256:<hex>``."""
        hexd = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hexd[:2] / hexd / "data"


@pytest.fixture(scope="module")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OciRegistry]:
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    base = tmp_path_factory.mktemp("oci-registry")
    port = free_port()
    storage = base / "data"
    config = base / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: info\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: uniflow-test-secret\n"
    )
    log = base / "registry.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(port, proc, timeout=20)
        yield OciRegistry(f"127.0.0.1:{port}", log, storage)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def skopeo() -> Any:
    """``skopeo(*args)``: run skopeo (bounded), return its stdout; skipped when absent."""
    binary = shutil.which("skopeo")
    if binary is None:
        pytest.skip("skopeo is not installed (apt-get install skopeo)")

    def run(*args: str) -> str:
        r = subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode == 0, (args, r.stderr)
        return r.stdout

    return run
