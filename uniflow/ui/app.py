"""The ``uniflow ui`` web application (Starlette): read-only pages and JSON over the registry.

Routes (all GET/HEAD; any other method is answered 405 before routing):

==========================================  ===============================================
``/``                                        every model
``/models/<name>``                           versions table, metric charts, stage timeline
``/models/<name>/<version>``                 the version's card
``/models/<name>/compare?v=A&v=B[&v=C]``     versions side by side
``/models/<name>/history``                   the audit log
``/api/models``                              ``uniflow models list --json``
``/api/models/<name>[?stage=S]``             ``uniflow models list NAME --json``
``/api/models/<name>/<version>``             ``uniflow models show NAME VERSION --json``
``/api/models/<name>/compare?v=A&v=B``       ``uniflow models compare NAME A B --json``
``/api/models/<name>/history``               ``uniflow models history NAME --json``
``/healthz``                                 ``{"ok": true, ...}``
==========================================  ===============================================

A :class:`uniflow.NotFoundError` is a 404 page (JSON for ``/api``), any other
:class:`uniflow.UsageError` a 400, an :class:`uniflow.IntegrityError` (the page of a record
every listing skips: a tag that is no version, an unreadable lifecycle) a 422, any other
``UniflowError`` a 500, each with its one-line message; nothing shows a traceback. Every
response carries a Content-Security-Policy that allows no script at all, and
``Server-Timing: app;dur=<ms>``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import IntegrityError, NotFoundError, UniflowError, UsageError, __version__
from .._jsonable import to_jsonable
from .._types import show_payload
from . import views
from .cache import CachedRegistry
from .render import CSP, STATIC, Links, render_page
from .server import is_loopback

if TYPE_CHECKING:  # pragma: no cover
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response

    from .. import RegistryReader

__all__ = ["create_app", "READ_METHODS"]

log = logging.getLogger("uniflow.ui")

READ_METHODS = frozenset({"GET", "HEAD"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _host_name(scope: Scope) -> str:
    """The host name of the request's Host header, without its port (``[::1]`` kept whole)."""
    for key, value in scope.get("headers", []):
        if key == b"host":
            host = str(value.decode("latin-1")).strip().lower()
            return host[: host.index("]") + 1] if host.startswith("[") and "]" in host else host.split(":")[0]
    return ""


async def _plain(send: Send, status: int, text: str, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                *extra,
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class ReadOnly:
    """ASGI middleware: anything but GET/HEAD is 405 (nothing reaches a route); with
    ``loopback_only`` a Host header naming anything but a loopback host is 403 (so a page
    elsewhere cannot reach the server through DNS rebinding); security headers and
    ``Server-Timing`` on every response."""

    def __init__(self, app: ASGIApp, loopback_only: bool = False) -> None:
        self.app = app
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in READ_METHODS:
            await _plain(
                send,
                405,
                "405 method not allowed: this server is read-only (GET and HEAD only)\n",
                [(b"allow", b"GET, HEAD")],
            )
            return
        if self.loopback_only and not is_loopback(_host_name(scope)):
            await _plain(send, 403, "403 forbidden: this server answers to loopback host names only\n")
            return
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                elapsed = (time.perf_counter() - started) * 1000
                headers = list(message.get("headers", []))
                headers += [
                    (b"content-security-policy", (CSP + "; frame-ancestors 'none'").encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-store"),
                    (b"server-timing", f"app;dur={elapsed:.2f}".encode()),
                ]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _status_of(exc: UniflowError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, UsageError):
        return 400
    if isinstance(exc, IntegrityError):  # a record that is there but unreadable (bad tag, lifecycle)
        return 422
    return 500


def _warm(reader: CachedRegistry, lock: threading.Lock) -> None:
    """Fill the cache behind the overview (errors are left for the first request to show)."""
    try:
        with lock:
            reader.refresh()
            views.overview(reader)
    except Exception:  # noqa: BLE001  the page itself will report it
        log.debug("uniflow ui: warm-up failed", exc_info=True)


_REASONS = {
    400: "Bad request",
    404: "Not found",
    405: "Method not allowed",
    422: "Unreadable record",
    500: "Error",
}


def create_app(registry: RegistryReader, *, loopback_only: bool = False, warm: bool = False) -> Starlette:
    """The ASGI application serving ``registry`` (read-only).

    ``loopback_only``: refuse requests whose ``Host`` header is not a loopback name
    (``uniflow ui`` sets it when it binds to a loopback address). ``warm``: read every
    model once in a background thread, so the first overview is served from memory.
    """
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    site = _Site(registry)
    if warm:
        threading.Thread(
            target=_warm, args=(site.reader, site.lock), name="uniflow-ui-warm", daemon=True
        ).start()
    guarded = site.guarded
    get = ["GET", "HEAD"]
    routes = [
        Route("/", guarded(site.overview_page), methods=get),
        Route("/healthz", guarded(site.healthz, locked=False), methods=get),
        Route("/api/models", guarded(site.api_models), methods=get),
        Route("/api/models/{name}", guarded(site.api_versions), methods=get),
        Route("/api/models/{name}/compare", guarded(site.api_compare), methods=get),
        Route("/api/models/{name}/history", guarded(site.api_history), methods=get),
        Route("/api/models/{name}/{version}", guarded(site.api_show), methods=get),
        Route("/models/{name}", guarded(site.model_page), methods=get),
        Route("/models/{name}/compare", guarded(site.compare_page), methods=get),
        Route("/models/{name}/history", guarded(site.history_page), methods=get),
        Route("/models/{name}/{version}", guarded(site.version_page), methods=get),
        Mount("/static", app=StaticFiles(directory=str(STATIC)), name="static"),
    ]
    middleware = [Middleware(ReadOnly, loopback_only=loopback_only)]
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={404: site.not_found, 500: site.server_error},
    )


def _name_of(request: Request) -> str:
    return str(request.path_params["name"])


def _compared(request: Request) -> list[str]:
    """The versions of ``?v=A&v=B``: at least two."""
    versions = [v for v in request.query_params.getlist("v") if v]
    if len(versions) < 2:
        raise UsageError("compare needs at least two versions: ?v=A&v=B")
    return versions


class _Site:
    """The pages and JSON endpoints of one registry: each a method taking the request.

    The registry object is shared and requests run in a thread pool, so handlers run under
    ``lock`` (:meth:`guarded`); reads go through a :class:`CachedRegistry`."""

    def __init__(self, registry: RegistryReader) -> None:
        self.registry = registry
        self.lock = threading.Lock()
        self.reader = CachedRegistry(registry)
        self.repo_label = registry.root.name
        self.links = Links()

    # ------------------------------------------------------------------ responses
    def html(self, template: str, _status: int = 200, **ctx: Any) -> Response:
        from starlette.responses import HTMLResponse

        page = render_page(template, self.links, repo=self.repo_label, generated=None, **ctx)
        return HTMLResponse(page, status_code=_status)

    def api(self, data: Any, status: int = 200) -> Response:
        from starlette.responses import Response

        body = json.dumps(to_jsonable(data), indent=2, ensure_ascii=False, allow_nan=False)
        return Response(body + "\n", status_code=status, media_type="application/json")

    def error_page(self, request: Request, status: int, message: str) -> Response:
        if request.url.path.startswith("/api/"):
            return self.api({"error": message, "status": status}, status)
        reason = _REASONS.get(status, "Error")
        return self.html(
            "error.html", status, crumbs=[], api=None, code=status, reason=reason, message=message
        )

    def guarded(
        self, handler: Callable[[Request], Response], locked: bool = True
    ) -> Callable[[Request], Response]:
        """``handler`` under the lock, its ``UniflowError`` an error page of its status and
        any other exception a logged 500 (never a traceback on the page)."""

        def endpoint(request: Request) -> Response:
            try:
                if not locked:
                    return handler(request)
                with self.lock:
                    return handler(request)
            except UniflowError as exc:
                return self.error_page(request, _status_of(exc), exc.message)
            except Exception:  # noqa: BLE001  logged, never shown
                log.exception("uniflow ui: %s %s failed", request.method, request.url.path)
                return self.error_page(request, 500, "internal error (see the server's log)")

        return endpoint

    def not_found(self, request: Request, exc: Exception) -> Response:  # noqa: ARG002 (Starlette's exception-handler signature)
        return self.error_page(request, 404, f"no page at {request.url.path}")

    def server_error(self, request: Request, exc: Exception) -> Response:  # noqa: ARG002 (Starlette's exception-handler signature)
        return self.error_page(request, 500, "internal error (see the server's log)")

    def _crumbs(self, name: str, *more: tuple[str, str | None]) -> list[tuple[str, str | None]]:
        return [(name, self.links.model(name) if more else None), *more]

    # ------------------------------------------------------------------ pages
    def overview_page(self, request: Request) -> Response:  # noqa: ARG002 (Starlette's endpoint signature)
        self.reader.refresh()
        rows = views.overview(self.reader)
        return self.html("overview.html", rows=rows, crumbs=[], api=self.links.api("models"))

    def model_page(self, request: Request) -> Response:
        name = _name_of(request)
        q = request.query_params
        self.reader.refresh(name)
        data = views.model_page(
            self.reader,
            name,
            stage=q.get("stage") or None,
            sort=q.get("sort") or None,
            desc=q.get("order") == "desc",
        )
        return self.html(
            "model.html", crumbs=self._crumbs(name), api=self.links.api(f"models/{name}"), **data
        )

    def version_page(self, request: Request) -> Response:
        name, version = _name_of(request), str(request.path_params["version"])
        self.reader.refresh(name)
        data = views.version_page(self.reader, name, version)
        return self.html(
            "version.html",
            crumbs=self._crumbs(name, (version, None)),
            api=self.links.api(f"models/{name}/{version}"),
            **data,
        )

    def compare_page(self, request: Request) -> Response:
        name = _name_of(request)
        view = views.compare_page(self.reader, name, _compared(request))
        return self.html(
            "compare.html",
            name=name,
            view=view,
            crumbs=self._crumbs(name, ("compare", None)),
            api=self.links.api(f"models/{name}/compare?" + str(request.url.query)),
        )

    def history_page(self, request: Request) -> Response:
        name = _name_of(request)
        self.reader.refresh(name)
        return self.html(
            "history.html",
            name=name,
            events=views.history_page(self.reader, name),
            sigs=views.signatures(self.reader, name),
            crumbs=self._crumbs(name, ("history", None)),
            api=self.links.api(f"models/{name}/history"),
        )

    # ------------------------------------------------------------------ JSON (the CLI's --json shapes)
    def api_models(self, request: Request) -> Response:  # noqa: ARG002 (Starlette's endpoint signature)
        self.reader.refresh()
        return self.api([s.to_dict() for s in self.reader.list_models()])

    def api_versions(self, request: Request) -> Response:
        stage = request.query_params.get("stage") or None
        self.reader.refresh(_name_of(request))
        return self.api([v.to_dict() for v in self.reader.list_versions(_name_of(request), stage=stage)])

    def api_show(self, request: Request) -> Response:
        name = _name_of(request)
        self.reader.refresh(name)
        mv = self.reader.get(name, str(request.path_params["version"]))
        payload = show_payload(mv, self.reader.history(name))
        sigs = views.signatures(self.reader, name)
        if sigs is not None:  # only under a policy: who signed the tag and each event, the verdicts
            payload["signature"] = sigs.tags.get(mv.version) or views.unverified(sigs)
            for event in payload["history"]:
                views.with_signatures(event, sigs, event.get("commit", ""))
        return self.api(payload)

    def api_compare(self, request: Request) -> Response:
        return self.api(self.registry.compare_versions(_name_of(request), _compared(request)).to_dict())

    def api_history(self, request: Request) -> Response:
        name = _name_of(request)
        self.reader.refresh(name)
        sigs = views.signatures(self.reader, name)
        return self.api(
            [views.with_signatures(e.to_dict(), sigs, e.commit) for e in self.reader.history(name)]
        )

    def healthz(self, request: Request) -> Response:  # noqa: ARG002 (Starlette's endpoint signature)
        return self.api({"ok": True, "version": __version__, "read_only": True})
