"""Talking to an OCI registry: oras-py's ``Registry``, bounded and quiet. The only module of
uniflow that imports ``oras`` (the ``oci`` extra) and ``requests``.

What is taken from oras-py (0.2.43): its registry client (the session, the token and basic
authentication it answers a 401 with, credentials from Docker's ``config.json`` and credential
helpers, ``http`` instead of ``https`` with ``insecure=True``) and its URL building
(``Container``: ``/v2/<name>/blobs/<digest>``, ``/blobs/uploads/``, ``/manifests/<ref>``).
What is not, and why:

- its ``push``/``pull``/``upload_manifest``/``download_blob``: they write the OCI image
  manifest media type with oras' own layer types and title annotations only, read a whole
  blob into memory for a monolithic upload, and write pulled files by name through
  symlinks. uniflow builds the ModelPack manifest itself (``modelpack``), streams each file
  into a PUT, and writes pulled files itself (``pull``), through ``do_request``;
- its retry decorator on ``do_request`` (five attempts, sleeping up to 83 s between them,
  on any exception): every request here is tried once;
- no timeouts: every request of the session (the registry's and the token service's) gets
  the connect and read timeouts of :func:`timeouts` through a transport adapter, so a peer
  that accepts a connection and never answers costs at most the read timeout.

oras logs through the ``logging`` module; a ``NullHandler`` on its logger keeps the library
silent unless the application configures logging. Every failure is one :class:`RemoteError`
(unreachable, timed out, refused) or :class:`NotFoundError` (no such manifest or blob) line
naming the registry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

from .._errors import IntegrityError, NotFoundError, RemoteError, UsageError
from .._records.config import DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT, env_seconds
from .modelpack import INDEX_MEDIA_TYPE, MANIFEST_MEDIA_TYPE
from .ref import OciRef

try:
    import oras.container
    import oras.provider
    import oras.utils
    import requests
    from requests.adapters import HTTPAdapter
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise UsageError("uniflow oci needs the oci extra: pip install 'uniflow-registry[oci]'") from exc

__all__ = ["CONNECT_TIMEOUT_ENV", "READ_TIMEOUT_ENV", "OciClient", "Timeouts", "timeouts"]

logging.getLogger("oras").addHandler(logging.NullHandler())

CONNECT_TIMEOUT_ENV = "UNIFLOW_OCI_CONNECT_TIMEOUT"
READ_TIMEOUT_ENV = "UNIFLOW_OCI_READ_TIMEOUT"
#: what a manifest request accepts: the OCI manifest, and the kinds a tag may name instead
#: (so that a container image or an index is named as such, not misread)
_ACCEPT = ", ".join(
    (
        MANIFEST_MEDIA_TYPE,
        INDEX_MEDIA_TYPE,
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    )
)
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\"\)]+)")
_READ = 1 << 20
_UNDECORATED = oras.provider.Registry.do_request.__wrapped__  # without oras' retry decorator


@dataclass(frozen=True)
class Timeouts:
    """Seconds a connection to the registry may take to open, and any read of its answer."""

    connect: float = DEFAULT_CONNECT_TIMEOUT
    read: float = DEFAULT_READ_TIMEOUT


def timeouts() -> Timeouts:
    """The timeouts of registry calls: :data:`CONNECT_TIMEOUT_ENV` and :data:`READ_TIMEOUT_ENV`
    from the environment, else 10 s and 60 s."""
    return Timeouts(
        env_seconds(CONNECT_TIMEOUT_ENV) or DEFAULT_CONNECT_TIMEOUT,
        env_seconds(READ_TIMEOUT_ENV) or DEFAULT_READ_TIMEOUT,
    )


class _TimeoutAdapter(HTTPAdapter):
    """A transport that gives every request the same timeouts and never retries."""

    def __init__(self, limits: Timeouts) -> None:
        super().__init__(max_retries=0)
        self._limits = limits

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float | None, float | None] | None = None,  # noqa: ARG002 (requests' adapter signature; this adapter's own timeouts apply)
        verify: bool | str = True,
        cert: str | tuple[str, str] | None = None,
        proxies: dict[str, str] | None = None,
    ) -> requests.Response:
        bounded = (self._limits.connect, self._limits.read)  # whatever the caller passed (oras: none)
        return super().send(request, stream, bounded, verify, cert, proxies)


class _Registry(oras.provider.Registry):  # type: ignore[misc]
    """oras' registry client with its request tried once (see the module docstring)."""

    def do_request(
        self,
        url: str,
        method: str = "GET",
        data: Any = None,
        headers: dict[str, str] | None = None,
        json: Any = None,
        stream: bool = False,
    ) -> Any:
        return _UNDECORATED(self, url, method, data, headers, json, stream)


def _reason(exc: BaseException) -> str:
    found = _ERRNO.search(str(exc))
    return found.group(1).strip() if found else type(exc).__name__


def _oci_error(resp: Any) -> str:
    """The registry's own words from an error answer (``errors[0]``), bounded, or ''."""
    try:
        body = next(resp.iter_content(4096), b"")  # the loaded body, or 4 KiB of a stream
        errors = (json.loads(body) or {}).get("errors") or []
        first = errors[0] if errors and isinstance(errors[0], dict) else {}
        text = " ".join(str(first.get(k, "")) for k in ("code", "message")).strip()
    except Exception:  # noqa: BLE001 - an unreadable error body is no error of its own
        return ""
    return f": {text[:200]}" if text else ""


class OciClient:
    """One repository of one registry (``ref``'s host and repository)."""

    def __init__(self, ref: OciRef, *, plain_http: bool = False, limits: Timeouts | None = None) -> None:
        self.ref = ref
        self.limits = limits or timeouts()
        self.where = f"registry {ref.host}"
        self.plain_http = plain_http
        self._reg = _Registry(hostname=ref.host, insecure=plain_http)
        adapter = _TimeoutAdapter(self.limits)
        self._reg.session.mount("http://", adapter)
        self._reg.session.mount("https://", adapter)
        # set field by field: parsing "host/repo" would take a first component with a dot or
        # a colon for a registry, and a host without either for a namespace
        c = oras.container.Container("unset", registry=ref.host)
        *namespace, c.repository = ref.repository.split("/")
        c.namespace = "/".join(namespace) or None
        c.tag, c.digest = ref.tag or "latest", None
        self._container = c
        with self._calls("read the credentials for"):
            self._reg.auth.load_configs(c)

    def close(self) -> None:
        """Close the session's connections."""
        self._reg.session.close()

    # ------------------------------------------------------------------ requests
    def _url(self, path: str) -> str:
        return f"{self._reg.prefix}://{path}"

    @contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        """Translate what a request may raise into one line naming the registry."""
        try:
            yield
        except requests.exceptions.ConnectTimeout as exc:
            raise RemoteError(
                f"cannot {what} {self.where}: timed out connecting after {self.limits.connect:g}s "
                f"({CONNECT_TIMEOUT_ENV})"
            ) from exc
        except requests.exceptions.ReadTimeout as exc:
            raise self._silent(what) from exc
        except requests.exceptions.SSLError as exc:
            hint = "" if self.plain_http else "; a registry serving plain HTTP needs --plain-http"
            raise RemoteError(f"cannot {what} {self.where}: TLS failed ({_reason(exc)}){hint}") from exc
        except requests.exceptions.RequestException as exc:
            if "timed out" in str(exc):  # a read timeout inside a streamed body: requests wraps it
                raise self._silent(what) from exc
            raise RemoteError(f"cannot {what} {self.where}: {_reason(exc)}") from exc
        except ValueError as exc:  # oras: a 401 it could not answer, a session URL missing
            raise RemoteError(
                f"cannot {what} {self.where}: {exc} (credentials: docker login {self.ref.host})"
            ) from exc

    def _silent(self, what: str) -> RemoteError:
        return RemoteError(
            f"cannot {what} {self.where}: no answer within {self.limits.read:g}s ({READ_TIMEOUT_ENV})"
        )

    def _request(self, what: str, method: str, url: str, **kwargs: Any) -> Any:
        with self._calls(what):
            return self._reg.do_request(url, method, **kwargs)

    def _refused(self, what: str, resp: Any) -> RemoteError:
        return RemoteError(f"cannot {what} {self.where}: HTTP {resp.status_code}{_oci_error(resp)}")

    # ------------------------------------------------------------------ blobs
    def blob_exists(self, digest: str) -> bool:
        """Whether the repository holds blob ``digest`` (one HEAD request)."""
        what = f"check blob {digest[:19]} on"
        resp = self._request(what, "HEAD", self._url(self._container.get_blob_url(digest)))
        if resp.status_code == 200:
            return True
        if resp.status_code == 404:
            return False
        raise self._refused(what, resp)

    def upload(self, digest: str, size: int, data: IO[bytes]) -> None:
        """Upload ``size`` bytes read from ``data`` as blob ``digest``: a POST opens the upload,
        one PUT streams the bytes (the registry checks them against ``digest``)."""
        what = f"upload blob {digest[:19]} to"
        headers = {"Content-Type": "application/octet-stream"}
        resp = self._request(what, "POST", self._url(self._container.upload_blob_url()), headers=headers)
        if resp.status_code != 202:
            raise self._refused(what, resp)
        location = self._reg._get_location(resp, self._container)
        if not location:
            raise RemoteError(f"cannot {what} {self.where}: no upload location in its answer")
        url = oras.utils.append_url_params(location, {"digest": digest})
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        resp = self._request(what, "PUT", url, data=data, headers=headers)
        if resp.status_code != 201:
            raise self._refused(what, resp)

    def _read_bounded(self, resp: Any, limit: int, what: str) -> bytes:
        out = bytearray()
        with self._calls(what):
            for piece in resp.iter_content(_READ):
                out += piece
                if len(out) > limit:
                    raise RemoteError(f"cannot {what} {self.where}: the answer is over {limit} bytes")
        return bytes(out)

    def read_blob(self, digest: str, limit: int) -> bytes:
        """Blob ``digest`` (at most ``limit`` bytes), its sha256 checked."""
        what = f"read blob {digest[:19]} from"
        with self.open_blob(digest) as resp:
            data = self._read_bounded(resp, limit, what)
        if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
            raise IntegrityError(f"{self.where}: blob {digest} does not match its digest")
        return data

    @contextmanager
    def open_blob(self, digest: str) -> Iterator[Any]:
        """The streamed answer to a GET of blob ``digest`` (``.iter_content``), closed on exit."""
        what = f"read blob {digest[:19]} from"
        resp = self._request(what, "GET", self._url(self._container.get_blob_url(digest)), stream=True)
        try:
            if resp.status_code == 404:
                raise NotFoundError(f"{self.where} has no blob {digest} in {self.ref.repository}")
            if resp.status_code != 200:
                raise self._refused(what, resp)
            yield resp
        finally:
            resp.close()

    def chunks(self, resp: Any, what: str) -> Iterator[bytes]:
        """The body of ``resp`` in pieces of at most 1 MiB, failures translated."""
        with self._calls(what):
            yield from resp.iter_content(_READ)

    # ------------------------------------------------------------------ manifests
    def put_manifest(self, body: bytes, tag: str, media_type: str = MANIFEST_MEDIA_TYPE) -> str:
        """Store ``body`` (of ``media_type``) as the manifest at ``tag``; its digest (``sha256:...``)."""
        what = f"push the manifest {tag!r} to"
        url = self._url(self._container.manifest_url(tag))
        resp = self._request(what, "PUT", url, data=body, headers={"Content-Type": media_type})
        if resp.status_code not in (200, 201):
            raise self._refused(what, resp)
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def get_manifest(self, reference: str, limit: int) -> bytes:
        """The manifest bytes at ``reference`` (a tag or a digest), at most ``limit`` bytes; a
        :class:`NotFoundError` when the registry has none."""
        what = f"read {self.ref} from"
        url = self._url(self._container.manifest_url(reference))
        resp = self._request(what, "GET", url, headers={"Accept": _ACCEPT}, stream=True)
        try:
            if resp.status_code == 404:
                raise NotFoundError(
                    f"{self.ref} names nothing: {self.where} has no manifest {reference!r} "
                    f"in repository {self.ref.repository!r}"
                )
            if resp.status_code != 200:
                raise self._refused(what, resp)
            return self._read_bounded(resp, limit, what)
        finally:
            resp.close()
