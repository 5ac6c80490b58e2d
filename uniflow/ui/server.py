"""Serving the UI: bind a socket (``port=0`` picks a free one), then run uvicorn on it.

Binding first lets ``uniflow ui`` print the real URL before serving. Nothing here prints;
the command line does.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING, Any

from .. import UsageError

if TYPE_CHECKING:  # pragma: no cover
    pass

__all__ = ["bind", "is_loopback", "serve", "url_of"]


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (``port=0``: a free port), or a one-line UsageError."""
    if not 0 <= port <= 65535:
        raise UsageError(f"invalid port {port}: expected 0-65535")
    try:
        infos = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    """``http://host:port/`` of a bound socket."""
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def serve(app: Any, sock: socket.socket, *, log_level: str = "warning") -> None:
    """Serve the ASGI ``app`` (:func:`uniflow.ui.app.create_app`) on ``sock`` until
    interrupted (Ctrl-C or SIGTERM)."""
    import uvicorn

    config: Any = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        server_header=False,
        date_header=True,
        lifespan="off",
        proxy_headers=False,
    )
    uvicorn.Server(config).run(sockets=[sock])
