"""Allowed-signers files: our verdicts agree with ``ssh-keygen -Y verify``/``find-principals``
on principals patterns, namespaces and validity windows; malformed files fail in one line."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from uniflow import SignatureError
from uniflow._authority.allowed_signers import (
    MAX_ALLOWED_SIGNERS,
    MAX_LINE,
    AllowedSigners,
    match_pattern_list,
    parse_time,
)
from uniflow._authority.signing import load_signer
from uniflow._authority.sshsig import parse_signature

from .conftest import Key, make_key, ssh_keygen, write_allowed

MESSAGE = b"promote clf 1.0.0 to production\n"
NOW = "20260601Z"  # every verdict below is taken at a fixed time, ours and ssh-keygen's

# (allowed-signers line with {key}, principal asked for, verify time, namespace)
CASES = [
    ("alice@example.com {key}", "alice@example.com", NOW, "git"),
    ("bob@example.com {key}", "alice@example.com", NOW, "git"),
    ("*@example.com {key}", "alice@example.com", NOW, "git"),
    ("al?ce@example.com {key}", "alice@example.com", NOW, "git"),
    ("bob@example.com,alice@example.com {key}", "alice@example.com", NOW, "git"),
    ("!alice@example.com,*@example.com {key}", "alice@example.com", NOW, "git"),
    ('"alice@example.com,carol@example.com" {key}', "alice@example.com", NOW, "git"),
    ('alice@example.com namespaces="file" {key}', "alice@example.com", NOW, "git"),
    ('alice@example.com namespaces="file,g*" {key}', "alice@example.com", NOW, "git"),
    ('alice@example.com namespaces="git" {key}', "alice@example.com", NOW, "file"),
    ('alice@example.com valid-after="20270101Z" {key}', "alice@example.com", NOW, "git"),
    ('alice@example.com valid-after="20270101Z" {key}', "alice@example.com", "20270102Z", "git"),
    ('alice@example.com valid-before="20260101Z" {key}', "alice@example.com", NOW, "git"),
    ('alice@example.com valid-before="20260101120000Z" {key}', "alice@example.com", "20260101120000Z", "git"),
    (
        'alice@example.com valid-after="20250101Z",valid-before="20270101Z" {key}',
        "alice@example.com",
        NOW,
        "git",
    ),
    (
        'alice@example.com namespaces="git",valid-before="202601011200Z" {key}',
        "alice@example.com",
        NOW,
        "git",
    ),
    ("alice@example.com cert-authority {key}", "alice@example.com", NOW, "git"),
]


@pytest.mark.parametrize(("line", "principal", "at", "namespace"), CASES)
def test_verdict_agrees_with_ssh_keygen(
    tmp_path: Path, key: Key, line: str, principal: str, at: str, namespace: str
) -> None:
    armored = load_signer(str(key.path)).sign(MESSAGE, namespace)
    allowed = write_allowed(tmp_path / "allowed", line.format(key=key.pub_line))
    (tmp_path / "m.sig").write_text(armored)
    theirs = ssh_keygen(
        "-Y",
        "verify",
        "-f",
        str(allowed),
        "-I",
        principal,
        "-n",
        namespace,
        "-s",
        str(tmp_path / "m.sig"),
        f"-Overify-time={at}",
        data=MESSAGE,
    )
    verdict = AllowedSigners.load(allowed).verify(
        armored, MESSAGE, namespace=namespace, principal=principal, when=parse_time(at)
    )
    assert verdict.ok == (theirs.returncode == 0), (verdict, theirs.stderr)
    assert verdict.fingerprint == key.public.fingerprint and "\n" not in verdict.reason
    if verdict.ok:
        assert verdict.principal == principal


def test_find_principals_agrees_with_ssh_keygen(tmp_path: Path, key: Key, keydir: Path) -> None:
    other = make_key(keydir, "bob", "ed25519")
    allowed = write_allowed(
        tmp_path / "allowed",
        "# the team",
        f"alice@example.com,ci@example.com {key.pub_line}",
        "",
        f'*@ops.example.com namespaces="git" {key.pub_line}',
        f'old@example.com valid-before="20200101Z" {key.pub_line}',
        f'filer@example.com namespaces="file" {key.pub_line}',
        f"bob@example.com {other.pub_line}",
    )
    armored = load_signer(str(key.path)).sign(MESSAGE, "git")
    (tmp_path / "m.sig").write_text(armored)
    theirs = ssh_keygen(
        "-Y", "find-principals", "-f", str(allowed), "-n", "git", "-s", str(tmp_path / "m.sig")
    )
    ours = AllowedSigners.load(allowed).find_principals(parse_signature(armored).public_key, "git")
    # ssh-keygen prints the principals of the first line that allows the key, one per line
    assert ours[0].split(",") == theirs.stdout.decode().split() == ["alice@example.com", "ci@example.com"]
    assert ours == ["alice@example.com,ci@example.com", "*@ops.example.com"]


def test_verdict_reasons(tmp_path: Path, key: Key, keydir: Path) -> None:
    stranger = make_key(keydir, "mallory", "ed25519")
    signers = AllowedSigners.parse(
        f'alice@example.com valid-before="20260101Z" {key.pub_line}\n', source=".uniflow/allowed_signers"
    )
    good = load_signer(str(key.path)).sign(MESSAGE, "git")
    late = signers.verify(good, MESSAGE, namespace="git", when=datetime(2026, 3, 1, tzinfo=UTC))
    assert not late.ok and late.reason == (
        f"key {key.public.fingerprint}: .uniflow/allowed_signers line 1: "
        "signed at 2026-03-01T00:00:00Z, after valid-before 2026-01-01T00:00:00Z"
    )
    early = signers.verify(good, MESSAGE, namespace="git", when=datetime(2025, 3, 1, tzinfo=UTC))
    assert early.ok and early.principal == "alice@example.com" and early.principals == ("alice@example.com",)
    unknown = signers.verify(load_signer(str(stranger.path)).sign(MESSAGE, "git"), MESSAGE, namespace="git")
    assert (
        not unknown.ok
        and unknown.reason == f"key {stranger.public.fingerprint} is not in .uniflow/allowed_signers"
    )
    who = signers.verify(good, MESSAGE, namespace="git", principal="bob@example.com", when=0)
    assert not who.ok and "is not allowed for principal 'bob@example.com'" in who.reason
    tampered = signers.verify(good, MESSAGE + b"!", namespace="git", when=0)
    assert not tampered.ok and tampered.reason.startswith("signature does not match the signed data")
    wrong_ns = signers.verify(good, MESSAGE, namespace="file", when=0)
    assert not wrong_ns.ok and wrong_ns.reason == "signature is for namespace 'git', not 'file'"
    garbage = signers.verify("-----BEGIN SSH SIGNATURE-----\n", MESSAGE, namespace="git")
    assert not garbage.ok and garbage.fingerprint is None and "does not end with" in garbage.reason


def test_unverifiable_key_types_are_kept_but_never_match(key: Key) -> None:
    sk = (  # a FIDO security key, as ssh-keygen -t ed25519-sk writes it
        "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIAEBAQEBAQEB"
        "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAAAABHNzaDo="
    )
    signers = AllowedSigners.parse(f"hw@example.com {sk}\nca@example.com cert-authority {key.pub_line}\n")
    hw, ca = signers.entries
    assert hw.key is None and hw.unsupported and "unsupported key type" in hw.unsupported
    assert ca.cert_authority and ca.key == key.public
    verdict = signers.verify(load_signer(str(key.path)).sign(MESSAGE, "git"), MESSAGE, namespace="git")
    assert not verdict.ok and "is not in" in verdict.reason


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("alice@example.com\n", "line 1: expected 'principals [options] keytype base64'"),
        ("# c\nalice@example.com ssh-ed25519\n", "line 2: no key"),
        ("alice@example.com ssh-ed25519 !!!!\n", "line 1: public key is not base64"),
        ('alice@example.com foo="bar" ssh-ed25519 AAAA\n', "line 1: unsupported option 'foo'"),
        ("alice@example.com namespaces=git ssh-ed25519 AAAA\n", "namespaces needs a quoted value"),
        ('alice@example.com valid-after="2026" ssh-ed25519 AAAA\n', "invalid time '2026'"),
        ('alice@example.com valid-after="20261301" ssh-ed25519 AAAA\n', "invalid time '20261301'"),
        ('alice@example.com namespaces="git ssh-ed25519 AAAA\n', "unterminated quote"),
        ('"alice@example.com ssh-ed25519 AAAA\n', "unterminated quote in principals"),
        ('a@b namespaces="git",namespaces="file" ssh-ed25519 AAAA\n', "option 'namespaces' given twice"),
        ("x" * (MAX_LINE + 1) + "\n", f"line 1 is longer than {MAX_LINE} characters"),
        ("#" * (MAX_ALLOWED_SIGNERS + 1), f"larger than {MAX_ALLOWED_SIGNERS} bytes"),
        (b"alice@example.com \xff\n", "is not UTF-8"),
    ],
)
def test_malformed_files_fail_in_one_line(text: str | bytes, error: str) -> None:
    with pytest.raises(SignatureError, match=re.escape(error)) as err:
        AllowedSigners.parse(text, source="signers")
    assert "\n" not in str(err.value) and str(err.value).startswith("signers")


def test_options_with_quoted_commas_and_key_comments(key: Key) -> None:
    (entry,) = AllowedSigners.parse(
        'alice@example.com,ci@example.com namespaces="git,file",valid-after="20250101Z" '
        f"{key.pub_line} laptop\n"
    ).entries
    assert entry.namespaces == "git,file" and entry.valid_after == parse_time("20250101Z")
    assert entry.key == key.public and entry.matches_principal("ci@example.com")


def test_patterns_and_times() -> None:
    assert match_pattern_list("alice@example.com", "*@example.com,!bob@*")
    assert not match_pattern_list("bob@example.com", "*@example.com,!bob@*")
    assert match_pattern_list("a*b", "a?b") and not match_pattern_list("ab", "a?b")
    assert match_pattern_list("x" * 200, "*x*x*x*x*x*x*x*x*x*x*x*x") and not match_pattern_list(
        "x" * 200, "*x*y"
    )
    assert parse_time("20260102Z") == int(datetime(2026, 1, 2, tzinfo=UTC).timestamp())
    assert parse_time("202601021030UTC") == int(datetime(2026, 1, 2, 10, 30, tzinfo=UTC).timestamp())


def test_verdict_lists_every_principal_the_key_holds(key: Key) -> None:
    signers = AllowedSigners.parse(
        f"alice@example.com,!bob@example.com {key.pub_line}\n"
        f'ci@example.com namespaces="file" {key.pub_line}\n'
        f"*@ops.example.com,alice@example.com {key.pub_line}\n"
    )
    verdict = signers.verify(load_signer(str(key.path)).sign(MESSAGE, "git"), MESSAGE, namespace="git")
    assert verdict.ok and verdict.principal == "alice@example.com,!bob@example.com"
    assert verdict.principals == ("alice@example.com", "*@ops.example.com")
