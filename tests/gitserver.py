"""A smart-HTTP Git server on 127.0.0.1 that demands a token, as GitHub and GitLab do for a
private repository: ``git http-backend`` behind Basic auth, started and stopped by a test."""

from __future__ import annotations

import base64
import contextlib
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class TokenGitHTTP(BaseHTTPRequestHandler):
    """Answers 401 unless the request carries ``Authorization: Basic base64(user:token)``;
    otherwise runs ``git http-backend`` on the repositories below ``root``. A test may set
    ``token`` on the handler class while the server runs (a rotated token)."""

    root = ""
    user = ""
    token = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve()

    def do_POST(self) -> None:  # noqa: N802
        self._serve()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))
        out = b""
        while size := int(self.rfile.readline().strip() or b"0", 16):
            out += self.rfile.read(size)
            self.rfile.readline()
        self.rfile.readline()
        return out

    def _authorized(self) -> bool:
        scheme, _, creds = (self.headers.get("Authorization") or "").partition(" ")
        cls = type(self)
        return (
            scheme.lower() == "basic" and base64.b64decode(creds or "=") == f"{cls.user}:{cls.token}".encode()
        )

    def _serve(self) -> None:
        if not self._authorized():
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="git"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self._body()
        path, _, query = self.path.partition("?")
        env = {
            **os.environ,
            "GIT_PROJECT_ROOT": self.root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "REMOTE_USER": self.user,  # authenticated: http-backend then allows receive-pack
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=60)
        head, _, payload = out.stdout.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        status = next((int(v.split()[1]) for v in lines if v.lower().startswith("status:")), 200)
        self.send_response(status)
        for line in lines:
            name, _, value = line.partition(":")
            if name and name.lower() != "status":
                self.send_header(name, value.strip())
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@contextlib.contextmanager
def serve_git_http(root: Path, user: str, token: str) -> Iterator[tuple[str, type[TokenGitHTTP]]]:
    """Serve the repositories below ``root``; yields the server URL (``http://127.0.0.1:PORT``)
    and the handler class (set its ``token`` to rotate it)."""
    handler = type("Handler", (TokenGitHTTP,), {"root": str(root), "user": user, "token": token})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
