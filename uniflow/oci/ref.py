"""``oci://HOST[:PORT]/REPOSITORY[:TAG][@sha256:DIGEST]``: the references ``uniflow oci`` takes.

The grammar is the OCI distribution specification's (``<name>``, ``<reference>``) behind an
``oci://`` scheme, as KServe's modelcars and ``oras`` write it: HOST is a host name, an IPv4
address or a bracketed IPv6 address, with an optional port; REPOSITORY is one or more
lower-case path components (``[a-z0-9]+`` joined by ``.``, ``_``, ``__`` or dashes); TAG is
``[A-Za-z0-9_][A-Za-z0-9._-]{0,127}``; a digest pins the manifest by its sha256. Standard
library only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .._errors import UsageError

__all__ = ["OciRef", "SCHEME", "parse_oci_ref"]

SCHEME = "oci://"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9A-Fa-f:.]+\])"
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_RE = re.compile(
    rf"^(?P<host>{_HOST}(?::(?P<port>[0-9]{{1,5}}))?)"
    rf"/(?P<repo>{_COMPONENT}(?:/{_COMPONENT})*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9._-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
_FORM = "oci://HOST[:PORT]/REPOSITORY:TAG (or @sha256:DIGEST)"


@dataclass(frozen=True)
class OciRef:
    """A parsed ``oci://`` reference: ``host`` includes the port."""

    host: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def reference(self) -> str | None:
        """What names the manifest in the registry's API: the digest, else the tag."""
        return self.digest or self.tag

    def with_tag(self, tag: str) -> OciRef:
        """The same repository at ``tag`` (no digest)."""
        return OciRef(self.host, self.repository, tag, None)

    def __str__(self) -> str:
        tail = (f":{self.tag}" if self.tag else "") + (f"@{self.digest}" if self.digest else "")
        return f"{SCHEME}{self.host}/{self.repository}{tail}"


def parse_oci_ref(text: str) -> OciRef:
    """Parse ``text``; anything else (another scheme, a malformed reference) is a one-line
    :class:`UsageError` saying what is expected."""
    scheme, sep, _rest = text.partition("://")
    if not sep:
        raise UsageError(f"{text!r} is not an OCI reference: expected {_FORM}")
    if scheme.lower() != "oci":
        raise UsageError(f"unknown scheme {scheme + '://'!r} in {text!r}: expected {_FORM}")
    m = _RE.match(text[len(SCHEME) :])
    if m is None:
        raise UsageError(f"{text!r} is not a valid OCI reference: expected {_FORM}")
    port = m.group("port")
    if port is not None and not 0 < int(port) < 65536:
        raise UsageError(f"{text!r}: port {port} is out of range")
    return OciRef(m.group("host"), m.group("repo"), m.group("tag"), m.group("digest"))
