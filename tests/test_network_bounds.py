"""A blob remote that never answers, refuses, or answers with an error: ``uniflow push``,
``uniflow pull`` and ``uniflow get URL`` end in bounded time with one ``error:`` line naming
the remote, and only transient failures are retried.

Every server here is on 127.0.0.1, started and stopped by the test, every loop bounded: a
TCP black hole (accepts connections, never answers), a port nobody listens on, a tiny HTTP
server answering every request with one fixed S3 error (it counts the requests), and moto's
S3 server with no credentials in the environment.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.helpers import cli, clone, git, model_dir, open_registry, shared_setup

CONNECT = 1  # seconds, as the test's config.toml sets them
READ = 2
#: what any one command may take against an endpoint that never answers: the configured
#: timeouts (tried twice at most) plus the interpreter's start-up, with room for a busy machine
BOUND = 3 * (CONNECT + READ) + 12


class BlackHole:
    """A TCP port on 127.0.0.1 that accepts every connection and never sends a byte (with
    ``slam``: resets each at once, unread, so the client sees its request cut off)."""

    def __init__(self, slam: bool = False) -> None:
        self.slam = slam
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():  # bounded: close() sets the event
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)  # held open, never read nor answered
            if self.slam:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()  # a reset (RST), as from a crashing proxy

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    try:
        yield hole
    finally:
        hole.close()


def refused_port() -> int:
    """A port on 127.0.0.1 that was just free: connecting to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(autouse=True)
def _aws_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials present (they are not what fails here), no endpoint nor profile from the
    environment, no instance-metadata lookups, a private cache for registries read by URL;
    the CLI's subprocesses inherit it."""
    for k in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(k)
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "UNIFLOW_CACHE_DIR": str(tmp_path / "user-cache"),
    }.items():
        monkeypatch.setenv(k, v)


def _timeouts_config(endpoint: str) -> str:
    return f'endpoint_url = "{endpoint}"\nconnect_timeout = {CONNECT}\nread_timeout = {READ}\n'


def _published(tmp_path: Path, endpoint: str, *, refs: bool) -> tuple[Path, Path]:
    """``(bare, a)``: clone ``a`` registered model ``clf`` v1.0.0 (in production) with the blob
    remote ``origin`` at ``endpoint``; with ``refs`` its refs reached ``bare`` by ``git push``
    (its bytes, nowhere: the endpoint never took them)."""
    bare, a = shared_setup(tmp_path, blob_url="s3://models/reg", config_extra=_timeouts_config(endpoint))
    reg = open_registry(a)
    reg.register(str(model_dir(tmp_path / "m", 3, seed=5)), "clf", version="v1.0.0")
    reg.promote("clf", "v1.0.0", "production")
    reg.close()
    if refs:
        git(
            a,
            "push",
            "-q",
            "origin",
            "refs/tags/models/*:refs/tags/models/*",
            "refs/uniflow/*:refs/uniflow/*",
        )
    return bare, a


def _run(tmp_path: Path, command: str, endpoint: str) -> tuple[float, str, int]:
    """Run ``command`` (push, pull or get) against a blob remote at ``endpoint``:
    ``(seconds, stderr, exit code)``."""
    bare, a = _published(tmp_path, endpoint, refs=command != "push")
    if command == "push":
        cwd, args = a, ["push"]
    elif command == "pull":
        cwd, args = clone(bare, tmp_path / "b"), ["pull", "--all"]
    else:
        cwd = tmp_path / "empty"
        cwd.mkdir()
        args = ["get", f"file://{bare}", "clf", "--stage", "production"]
    start = time.monotonic()
    r = cli(cwd, *args, code=None, timeout=90)
    return time.monotonic() - start, r.stderr, r.returncode


def _one_error_line(stderr: str, endpoint: str) -> str:
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and stderr.strip() == errors[0], stderr
    line = errors[0]
    assert "'origin'" in line and endpoint.split("//")[1] in line, line
    assert "Traceback" not in stderr
    return line


@pytest.mark.parametrize("command", ["push", "pull", "get"])
def test_a_black_hole_endpoint_fails_in_bounded_time(
    tmp_path: Path, black_hole: BlackHole, command: str
) -> None:
    endpoint = f"http://127.0.0.1:{black_hole.port}"
    seconds, stderr, code = _run(tmp_path, command, endpoint)
    assert code == 9, stderr
    line = _one_error_line(stderr, endpoint)
    assert "timed out" in line and "read_timeout" in line, line
    assert seconds < BOUND, (seconds, line)
    assert black_hole.accepted, "the requests reached the black hole"


@pytest.mark.parametrize("command", ["push", "pull", "get"])
def test_a_refusing_endpoint_fails_at_once(tmp_path: Path, command: str) -> None:
    endpoint = f"http://127.0.0.1:{refused_port()}"
    seconds, stderr, code = _run(tmp_path, command, endpoint)
    assert code == 9, stderr
    line = _one_error_line(stderr, endpoint)
    assert "cannot connect" in line and "endpoint" in line, line
    assert seconds < 12, (seconds, line)  # nothing to wait for: no retries, the start-up only


class _FixedAnswer(BaseHTTPRequestHandler):
    """Answers every request with the server's ``status`` and an S3 error body; counts them."""

    def _answer(self) -> None:
        server = self.server
        assert isinstance(server, _CountingServer)
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        with server.lock:
            server.requests += 1
        code, error = server.status
        body = f"<Error><Code>{error}</Code><Message>{error}</Message></Error>".encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_HEAD = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


class _CountingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, status: tuple[int, str]) -> None:
        super().__init__(("127.0.0.1", 0), _FixedAnswer)
        self.status = status
        self.requests = 0
        self.lock = threading.Lock()


@pytest.fixture
def answering() -> Iterator[_CountingServer]:
    server = _CountingServer((503, "ServiceUnavailable"))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _push_in_process(tmp_path: Path, endpoint: str) -> str:
    """Push a one-chunk model to the blob remote at ``endpoint`` in this process (one chunk:
    one upload, so the requests counted are those of one call); the error's message."""
    from uniflow import RemoteError

    _, a = shared_setup(tmp_path, blob_url="s3://models/reg", config_extra=_timeouts_config(endpoint))
    reg = open_registry(a)
    reg.register(str(model_dir(tmp_path / "m", 1, seed=6)), "clf", version="v1.0.0")
    with pytest.raises(RemoteError) as info:
        reg.push()
    reg.close()
    return str(info.value)


def test_server_errors_are_retried_a_bounded_number_of_times(
    tmp_path: Path, answering: _CountingServer
) -> None:
    from uniflow.sharing.blobs import RETRIES

    endpoint = f"http://127.0.0.1:{answering.server_address[1]}"
    start = time.monotonic()
    message = _push_in_process(tmp_path, endpoint)
    assert time.monotonic() - start < 30
    assert "'origin'" in message and "503" in message and f"after {RETRIES} attempts" in message, message
    assert answering.requests == RETRIES, answering.requests  # the listing, RETRIES times; nothing else


def test_a_connection_reset_is_retried_a_bounded_number_of_times(tmp_path: Path) -> None:
    from uniflow.sharing.blobs import RETRIES

    slammer = BlackHole(slam=True)
    try:
        message = _push_in_process(tmp_path, f"http://127.0.0.1:{slammer.port}")
    finally:
        slammer.close()
    assert "'origin'" in message and f"after {RETRIES} attempts" in message, message
    # one connection per attempt; aiohttp may open a second one for an idempotent request
    assert RETRIES <= len(slammer.accepted) <= 2 * RETRIES, len(slammer.accepted)


@pytest.mark.parametrize(
    "status", [(403, "AccessDenied"), (403, "InvalidAccessKeyId"), (400, "InvalidRequest")]
)
def test_refusals_are_never_retried(
    tmp_path: Path, answering: _CountingServer, status: tuple[int, str]
) -> None:
    answering.status = status
    endpoint = f"http://127.0.0.1:{answering.server_address[1]}"
    message = _push_in_process(tmp_path, endpoint)
    assert "'origin'" in message and status[1] in message and "attempts" not in message, message
    assert answering.requests == 1, answering.requests


@pytest.mark.parametrize("partial", [False, True])
def test_missing_credentials_fail_at_once(
    tmp_path: Path, s3: str, monkeypatch: pytest.MonkeyPatch, partial: bool
) -> None:
    """moto's S3 server is there, but no credentials are (or only the key id): one error
    saying which are missing, no retries."""
    for k in [k for k in os.environ if k.startswith("AWS_")]:
        monkeypatch.delenv(k)  # those the s3 fixture set, and any of this machine's
    if partial:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    empty = tmp_path / "empty-credentials"
    empty.write_text("")
    _, a = shared_setup(tmp_path, blob_url="s3://models/reg", config_extra=_timeouts_config(s3))
    reg = open_registry(a)
    reg.register(str(model_dir(tmp_path / "m", 2, seed=7)), "clf", version="v1.0.0")
    reg.close()
    env = {
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_CONFIG_FILE": str(empty),
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    start = time.monotonic()
    r = cli(a, "push", code=None, env=env, timeout=120)
    seconds = time.monotonic() - start
    assert r.returncode == 9, r.stderr
    line = _one_error_line(r.stderr, s3)
    assert "credentials" in line and "AWS_SECRET_ACCESS_KEY" in line and "attempts" not in line, line
    assert ("missing: AWS_SECRET_ACCESS_KEY" in line) == partial, line
    assert seconds < 12, seconds


@pytest.mark.parametrize(
    ("value", "problem"),
    [("0", "0"), ('"5"', "'5'"), ("true", "True"), ("4000", "4000"), ("nan", "nan")],
)
def test_invalid_timeouts_in_config_are_refused(tmp_path: Path, value: str, problem: str) -> None:
    _, a = shared_setup(tmp_path, blob_url="s3://models/reg", config_extra=f"read_timeout = {value}\n")
    r = cli(a, "remote", "list", code=8)
    assert "remotes.origin.read_timeout" in r.stderr and problem in r.stderr, r.stderr


def test_environment_overrides_the_configured_timeouts(tmp_path: Path, black_hole: BlackHole) -> None:
    """UNIFLOW_BLOB_READ_TIMEOUT wins over the config's read_timeout (here 1 s over 2 s); a
    value that is not a number of seconds is a usage error (exit 2)."""
    endpoint = f"http://127.0.0.1:{black_hole.port}"
    bare, _ = _published(tmp_path, endpoint, refs=True)
    b = clone(bare, tmp_path / "b")
    r = cli(b, "pull", "--all", code=9, env={"UNIFLOW_BLOB_READ_TIMEOUT": "1"}, timeout=90)
    assert "read_timeout = 1s" in _one_error_line(r.stderr, endpoint)
    r = cli(b, "pull", "--all", code=2, env={"UNIFLOW_BLOB_READ_TIMEOUT": "soon"}, timeout=90)
    assert "UNIFLOW_BLOB_READ_TIMEOUT='soon'" in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_a_remote_config_may_only_shorten_the_timeouts(tmp_path: Path) -> None:
    """A registry read by Git URL: its config is hostile data; it may make a call give up
    sooner (read_timeout = 2 is kept) but never wait longer (600 becomes the default, 60)."""
    from uniflow._records.config import DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, parse_config
    from uniflow.sharing.blobstore import timeouts_of
    from uniflow.sharing.giturl import parse_git_url
    from uniflow.sharing.remote import blob_remote_for

    url = parse_git_url("https://example.com/team/models.git")
    assert url is not None
    for given, expected in [
        ((1, 2), (1.0, 2.0)),
        ((600, 3600), (DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT)),
    ]:
        raw = {
            "remotes": {"origin": {"url": "s3://b/p", "connect_timeout": given[0], "read_timeout": given[1]}}
        }
        (spec,) = blob_remote_for(url, parse_config(raw), None)
        timeouts = timeouts_of(spec)
        assert (timeouts.connect, timeouts.read) == expected


@pytest.mark.parametrize("command", ["pull", "get"])
def test_a_black_hole_git_server_fails_in_bounded_time(
    tmp_path: Path, black_hole: BlackHole, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    """Git over HTTP to a server that accepts and never answers: git gives up once the
    transfer stalled for UNIFLOW_GIT_STALL_TIMEOUT seconds (its low-speed limit)."""
    monkeypatch.setenv("UNIFLOW_GIT_STALL_TIMEOUT", "2")
    url = f"http://127.0.0.1:{black_hole.port}/remote.git"
    if command == "pull":
        bare, _ = shared_setup(tmp_path)
        cwd = clone(bare, tmp_path / "b")
        git(cwd, "remote", "set-url", "origin", url)
        args = ["pull"]
    else:
        cwd = tmp_path / "empty"
        cwd.mkdir()
        args = ["get", url, "clf"]
    start = time.monotonic()
    r = cli(cwd, *args, code=None, timeout=90)
    seconds = time.monotonic() - start
    assert r.returncode == 9, r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and r.stderr.strip() == errors[0], r.stderr
    assert "too slow" in errors[0] or "timed out" in errors[0], errors[0]
    assert seconds < 3 * 2 + 12, (seconds, errors[0])
    assert black_hole.accepted
