"""Git's and OpenSSH's allowed-signers files (``gpg.ssh.allowedSignersFile``, ssh-keygen(1)).

One signer per line, ``#`` comments and blank lines ignored::

    principals [options] keytype base64 [comment]

``principals`` is a comma-separated pattern list (``*`` and ``?`` wildcards, ``!`` to
exclude, as in ssh_config(5) PATTERNS), quoted if it contains spaces. Options, comma
separated: ``namespaces="git,file"`` (a pattern list; without it every namespace is
allowed), ``valid-after="YYYYMMDD[HHMM[SS]][Z]"`` and ``valid-before=...`` (no ``Z``: local
time, as OpenSSH reads it; the bounds are inclusive), and ``cert-authority``. uniflow does
not verify certificate signatures, so a ``cert-authority`` line is kept but never matches a
key. A line whose key type uniflow cannot verify (``sk-*`` security keys, DSA) is kept too,
and never matches. Any other malformed line is a :class:`~uniflow.SignatureError` naming it.

:meth:`AllowedSigners.verify` turns a signature into a :class:`Verdict`: the signature must
verify with its embedded key in the namespace, and a line must list that key, match the
principal asked for, allow the namespace and be valid at ``when``.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .._errors import SignatureError
from .sshsig import PublicKey, Signature, parse_public_key, parse_signature, verify_signature

__all__ = [
    "MAX_ALLOWED_SIGNERS",
    "MAX_ENTRIES",
    "MAX_LINE",
    "AllowedSigner",
    "AllowedSigners",
    "Verdict",
    "match_pattern_list",
    "parse_time",
]

#: the largest allowed-signers file read, in bytes
MAX_ALLOWED_SIGNERS = 1 << 20
#: the longest line accepted
MAX_LINE = 16 * 1024
#: the most signer lines accepted
MAX_ENTRIES = 10_000
_OPTIONS = ("cert-authority", "namespaces", "valid-after", "valid-before")
_TIME_FORMATS = {8: "%Y%m%d", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}


def _match_pattern(text: str, pattern: str) -> bool:
    """OpenSSH's ``match_pattern``: ``*`` any run, ``?`` one character, case-sensitive."""
    t = p = 0
    star_p, star_t = -1, 0
    while t < len(text):
        if p < len(pattern) and (pattern[p] == "?" or pattern[p] == text[t]):
            t, p = t + 1, p + 1
        elif p < len(pattern) and pattern[p] == "*":
            star_p, star_t, p = p, t, p + 1
        elif star_p >= 0:  # let the last star absorb one more character
            star_t += 1
            t, p = star_t, star_p + 1
        else:
            return False
    return all(c == "*" for c in pattern[p:])


def match_pattern_list(text: str, patterns: str) -> bool:
    """Whether ``text`` matches the comma-separated ``patterns`` (a ``!pattern`` that matches excludes)."""
    matched = False
    for pattern in patterns.split(","):
        if pattern.startswith("!"):
            if _match_pattern(text, pattern[1:]):
                return False
        elif _match_pattern(text, pattern):
            matched = True
    return matched


def parse_time(value: str) -> int:
    """An allowed-signers timestamp ``YYYYMMDD[HHMM[SS]]`` (``Z``/``UTC``: UTC, else local) in seconds."""
    text, utc = value, False
    if text.upper().endswith("UTC") and len(text) > 3:
        text, utc = text[:-3], True
    elif text.upper().endswith("Z") and len(text) > 1:
        text, utc = text[:-1], True
    fmt = _TIME_FORMATS.get(len(text))
    if fmt is None or not text.isdigit():
        raise SignatureError(f"invalid time {value!r}: expected YYYYMMDD[HHMM[SS]][Z]")
    try:
        parsed = time.strptime(text, fmt)
    except ValueError:
        raise SignatureError(f"invalid time {value!r}: expected YYYYMMDD[HHMM[SS]][Z]") from None
    return calendar.timegm(parsed) if utc else int(time.mktime(parsed))


def _when(when: float | datetime | None) -> int:
    if when is None:
        return int(time.time())
    if isinstance(when, datetime):
        return int(when.timestamp())
    return int(when)


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class AllowedSigner:
    """One line of an allowed-signers file.

    ``key`` is ``None`` when uniflow cannot verify the key type (``unsupported`` says why);
    ``valid_after``/``valid_before`` are seconds since the epoch, ``None`` when unbounded.
    """

    line: int
    principals: str
    key_type: str
    key: PublicKey | None
    namespaces: str | None = None
    valid_after: int | None = None
    valid_before: int | None = None
    cert_authority: bool = False
    unsupported: str | None = None

    def matches_principal(self, principal: str) -> bool:
        """Whether ``principal`` matches this line's principals pattern list."""
        return match_pattern_list(principal, self.principals)

    def refusal(self, namespace: str, when: int) -> str | None:
        """Why this line does not allow signing in ``namespace`` at ``when``; ``None`` if it does."""
        if self.namespaces is not None and not match_pattern_list(namespace, self.namespaces):
            return f"namespace {namespace!r} is not in namespaces={self.namespaces!r}"
        if self.valid_after is not None and when < self.valid_after:
            return f"signed at {_iso(when)}, before valid-after {_iso(self.valid_after)}"
        if self.valid_before is not None and when > self.valid_before:
            return f"signed at {_iso(when)}, after valid-before {_iso(self.valid_before)}"
        return None


@dataclass(frozen=True)
class Verdict:
    """What verifying one signature concluded; ``reason`` is one line either way.

    ``principal`` is the principal asked for, else the principals field of the first line
    that allowed the key; ``fingerprint`` is the signing key's ``SHA256:...`` when the
    signature could be parsed; ``principals`` (when ``ok``) lists every principal pattern of
    every line that allowed the key, in file order (``!`` exclusions left out; a wildcard
    line contributes its pattern).
    """

    ok: bool
    reason: str
    principal: str | None = None
    fingerprint: str | None = None
    namespace: str | None = None
    principals: tuple[str, ...] = ()


def _field(rest: str, n: int, what: str) -> tuple[str, str]:
    """Split off one whitespace-delimited field, which may be double-quoted."""
    rest = rest.lstrip()
    if rest.startswith('"'):
        end = rest.find('"', 1)
        if end < 0:
            raise SignatureError(f"line {n}: unterminated quote in {what}")
        return rest[1:end], rest[end + 1 :]
    parts = rest.split(None, 1)
    return (parts[0], parts[1]) if len(parts) == 2 else (rest, "")


def _split_options(text: str, n: int) -> list[str]:
    """Split ``a,b="x,y",c`` on commas outside quotes."""
    out, cur, quoted = [], "", False
    for c in text:
        if c == '"':
            quoted = not quoted
        if c == "," and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += c
    if quoted:
        raise SignatureError(f"line {n}: unterminated quote in options")
    return [*out, cur]


def _options_end(rest: str) -> int:
    """Where the options field ends: the first whitespace outside double quotes."""
    quoted = False
    for i, c in enumerate(rest):
        if c == '"':
            quoted = not quoted
        elif c in " \t" and not quoted:
            return i
    return len(rest)


def _parse_options(text: str, n: int) -> dict[str, str | None]:
    opts: dict[str, str | None] = {}
    for opt in _split_options(text, n):
        name, eq, value = opt.partition("=")
        name = name.lower()
        if name not in _OPTIONS:
            raise SignatureError(f"line {n}: unsupported option {name!r}")
        if name in opts:
            raise SignatureError(f"line {n}: option {name!r} given twice")
        if name == "cert-authority":
            if eq:
                raise SignatureError(f"line {n}: cert-authority takes no value")
            opts[name] = None
            continue
        if len(value) < 2 or not (value.startswith('"') and value.endswith('"')):
            raise SignatureError(f'line {n}: {name} needs a quoted value ({name}="...")')
        opts[name] = value[1:-1]
    return opts


def _parse_key(text: str, n: int) -> tuple[str, PublicKey | None, str | None]:
    fields = text.split()
    if len(fields) < 2:
        raise SignatureError(f"line {n}: no key")
    try:
        return fields[0], parse_public_key(text), None
    except SignatureError as exc:
        if "unsupported key type" in str(exc) or fields[0].startswith("sk-") or "-cert-" in fields[0]:
            return fields[0], None, str(exc)
        raise SignatureError(f"line {n}: {exc}") from None


def _looks_like_key(text: str) -> bool:
    head = text.split(None, 1)[0] if text.split() else ""
    return head.startswith(("ssh-", "ecdsa-", "sk-")) or head.endswith("@openssh.com")


def _parse_line(line: str, n: int) -> AllowedSigner:
    principals, rest = _field(line, n, "principals")
    if not principals or not rest.strip():
        raise SignatureError(f"line {n}: expected 'principals [options] keytype base64'")
    rest = rest.lstrip()
    opts: dict[str, str | None] = {}
    if not _looks_like_key(rest):
        end = _options_end(rest)
        opts = _parse_options(rest[:end], n)
        rest = rest[end:]
    try:
        after = parse_time(opts["valid-after"] or "") if "valid-after" in opts else None
        before = parse_time(opts["valid-before"] or "") if "valid-before" in opts else None
    except SignatureError as exc:
        raise SignatureError(f"line {n}: {exc}") from None
    key_type, key, unsupported = _parse_key(rest, n)
    namespaces = opts.get("namespaces")
    return AllowedSigner(
        line=n,
        principals=principals,
        key_type=key_type,
        key=key,
        namespaces=namespaces if "namespaces" in opts else None,
        valid_after=after,
        valid_before=before,
        cert_authority="cert-authority" in opts,
        unsupported=unsupported,
    )


class AllowedSigners:
    """A parsed allowed-signers file: who may sign, with which key, where and when."""

    def __init__(self, entries: tuple[AllowedSigner, ...], source: str = "allowed signers") -> None:
        self.entries = entries
        self.source = source

    @classmethod
    def parse(cls, text: str | bytes, source: str = "allowed signers") -> AllowedSigners:
        """Parse an allowed-signers file's content (bounded: size, line length, line count)."""
        if len(text) > MAX_ALLOWED_SIGNERS:
            raise SignatureError(f"{source} is larger than {MAX_ALLOWED_SIGNERS} bytes")
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise SignatureError(f"{source} is not UTF-8") from None
        entries: list[AllowedSigner] = []
        for n, raw in enumerate(text.splitlines(), 1):
            if len(raw) > MAX_LINE:
                raise SignatureError(f"{source} line {n} is longer than {MAX_LINE} characters")
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if len(entries) >= MAX_ENTRIES:
                raise SignatureError(f"{source} has more than {MAX_ENTRIES} signers")
            try:
                entries.append(_parse_line(line, n))
            except SignatureError as exc:
                raise SignatureError(f"{source}: {exc}") from None
        return cls(tuple(entries), source)

    @classmethod
    def load(cls, path: str | Path) -> AllowedSigners:
        """Read and parse an allowed-signers file."""
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_ALLOWED_SIGNERS + 1)
        except OSError as exc:
            raise SignatureError(f"cannot read allowed signers {path}: {exc.strerror or exc}") from None
        return cls.parse(data, source=str(path))

    def _lines_for(self, key: PublicKey) -> list[AllowedSigner]:
        return [e for e in self.entries if e.key == key and not e.cert_authority]

    def find_principals(
        self, key: PublicKey, namespace: str, when: float | datetime | None = None
    ) -> list[str]:
        """The principals fields of the lines that allow ``key`` in ``namespace`` at ``when``
        (``ssh-keygen -Y find-principals``)."""
        at = _when(when)
        return [e.principals for e in self._lines_for(key) if e.refusal(namespace, at) is None]

    def lines_for_principal(self, principal: str) -> list[AllowedSigner]:
        """The lines whose principals pattern list matches ``principal``."""
        return [e for e in self.entries if e.matches_principal(principal)]

    def verify(
        self,
        signature: Signature | str | bytes,
        message: bytes,
        *,
        namespace: str,
        principal: str | None = None,
        when: float | datetime | None = None,
    ) -> Verdict:
        """Verify ``signature`` over ``message``: a :class:`Verdict`, never an exception for a bad signature.

        ``when`` (default: now) is the time the key must be valid at; Git passes the
        committer's or tagger's date, which the signer chose.
        """
        try:
            sig = signature if isinstance(signature, Signature) else parse_signature(signature)
        except SignatureError as exc:
            return Verdict(False, str(exc), principal, None, namespace)
        fingerprint = sig.public_key.fingerprint
        try:
            verify_signature(sig, message, namespace)
        except SignatureError as exc:
            return Verdict(False, str(exc), principal, fingerprint, namespace)
        lines = self._lines_for(sig.public_key)
        if not lines:
            return Verdict(
                False, f"key {fingerprint} is not in {self.source}", principal, fingerprint, namespace
            )
        if principal is not None:
            lines = [e for e in lines if e.matches_principal(principal)]
            if not lines:
                reason = f"key {fingerprint} is not allowed for principal {principal!r} in {self.source}"
                return Verdict(False, reason, principal, fingerprint, namespace)
        at = _when(when)
        allowing = [e for e in lines if e.refusal(namespace, at) is None]
        if allowing:
            who = principal if principal is not None else allowing[0].principals
            names = (p for e in allowing for p in e.principals.split(",") if p and not p.startswith("!"))
            reason = f"good signature by {who} with key {fingerprint}"
            return Verdict(True, reason, who, fingerprint, namespace, tuple(dict.fromkeys(names)))
        refusals = [f"{self.source} line {e.line}: {e.refusal(namespace, at)}" for e in lines]
        return Verdict(False, f"key {fingerprint}: {refusals[0]}", principal, fingerprint, namespace)
