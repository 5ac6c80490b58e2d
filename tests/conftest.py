"""Shared fixtures: throwaway Git repositories with a known identity."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import GIT_ENV, free_port, make_repo, wait_port


@pytest.fixture(autouse=True)
def _git_identity(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    for k, v in GIT_ENV.items():
        monkeypatch.setenv(k, v)
    home = tmp_path_factory.mktemp("home")
    (home / ".gitconfig").write_text(
        "[init]\n\tdefaultBranch = main\n[user]\n\tname = Test User\n\temail = test@example.com\n"
    )
    monkeypatch.setenv("HOME", str(home))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo")


@pytest.fixture
def registry(repo: Path):
    from uniflow import ModelRegistry

    return ModelRegistry(repo)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 with bucket ``models``; the AWS variables point at it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        wait_port(port)
        endpoint = f"http://127.0.0.1:{port}"
        # moto keeps its buckets in this process, not in the server: without a reset a test
        # would see the objects (tampered chunks included) an earlier test left behind
        urllib.request.urlopen(
            urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=30
        )
        for k, v in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }.items():
            monkeypatch.setenv(k, v)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        import boto3

        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="models")
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def weights(tmp_path: Path):
    """``weights(tag, size)``: a file of random bytes whose first byte is ``tag``."""

    def make(tag: int, size: int = 50_000) -> Path:
        p = tmp_path / f"w{tag}.bin"
        p.write_bytes(bytes([tag % 256]) + os.urandom(size))
        return p

    return make
