"""SSHSIG signatures against OpenSSH itself, both directions, and every refusal one line."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from uniflow import SignatureError, SigningError
from uniflow._authority.signing import (
    KeySigner,
    ProgramSigner,
    load_signer,
    read_signing_config,
    signer_from_config,
)
from uniflow._authority.sshsig import MAX_ARMOR, armor, parse_signature, verify_signature

from .conftest import Key, make_key, ssh_keygen, write_allowed

MESSAGE = b"models/clf v1.0.0 manifest\n"


def _verify_with_ssh_keygen(tmp_path: Path, key: Key, armored: str, namespace: str = "git") -> str:
    sig_file = tmp_path / "msg.sig"
    sig_file.write_text(armored)
    allowed = write_allowed(tmp_path / "allowed", f"alice@example.com {key.pub_line}")
    verify = ssh_keygen(
        "-Y",
        "verify",
        "-f",
        str(allowed),
        "-I",
        "alice@example.com",
        "-n",
        namespace,
        "-s",
        str(sig_file),
        data=MESSAGE,
    )
    assert verify.returncode == 0, verify.stderr
    check = ssh_keygen("-Y", "check-novalidate", "-n", namespace, "-s", str(sig_file), data=MESSAGE)
    assert check.returncode == 0, check.stderr
    return verify.stdout.decode()


def test_our_signature_verifies_with_ssh_keygen(tmp_path: Path, key: Key) -> None:
    signer = load_signer(str(key.path))
    assert isinstance(signer, KeySigner)  # an unencrypted key signs in-process
    armored = signer.sign(MESSAGE, "git")
    out = _verify_with_ssh_keygen(tmp_path, key, armored)
    assert 'Good "git" signature for alice@example.com' in out and key.public.fingerprint in out


def test_ssh_keygen_signature_verifies_with_ours(key: Key) -> None:
    made = ssh_keygen("-Y", "sign", "-n", "file", "-f", str(key.path), data=MESSAGE)
    assert made.returncode == 0, made.stderr
    sig = parse_signature(made.stdout)
    assert sig.public_key == key.public and sig.namespace == "file" and sig.hash_algorithm == "sha512"
    verify_signature(sig, MESSAGE, "file")
    assert sig.armor() == made.stdout.decode()  # our armor is OpenSSH's, line for line


def test_ed25519_signature_is_byte_identical_to_ssh_keygen(keydir: Path) -> None:
    key = make_key(keydir, "det", "ed25519")  # Ed25519 signatures are deterministic
    made = ssh_keygen("-Y", "sign", "-n", "git", "-f", str(key.path), data=MESSAGE)
    assert load_signer(str(key.path)).sign(MESSAGE, "git") == made.stdout.decode()


def test_rsa_both_directions(tmp_path: Path, keydir: Path) -> None:
    key = make_key(keydir, "rsa", "rsa")
    _verify_with_ssh_keygen(tmp_path, key, load_signer(str(key.path)).sign(MESSAGE, "git"))
    made = ssh_keygen("-Y", "sign", "-n", "git", "-f", str(key.path), data=MESSAGE)
    verify_signature(parse_signature(made.stdout), MESSAGE, "git")


def _askpass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, passphrase: str) -> None:
    script = tmp_path / "askpass.sh"
    script.write_text(f"#!/bin/sh\necho '{passphrase}'\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("SSH_ASKPASS", str(script))
    monkeypatch.setenv("SSH_ASKPASS_REQUIRE", "force")
    monkeypatch.setenv("DISPLAY", ":0")


def test_passphrase_key_signs_through_ssh_keygen(
    tmp_path: Path, keydir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = make_key(keydir, "locked", "ed25519", passphrase="correct horse")
    (keydir / "locked.pub").unlink()  # the public half is read from the encrypted file itself
    _askpass(tmp_path, monkeypatch, "correct horse")
    signer = load_signer(str(key.path))
    assert isinstance(signer, ProgramSigner) and signer.public_key == key.public
    armored = signer.sign(MESSAGE, "git")
    verify_signature(parse_signature(armored), MESSAGE, "git")
    _askpass(tmp_path, monkeypatch, "wrong")
    with pytest.raises(SigningError, match=r"ssh-keygen -Y sign failed"):
        signer.sign(MESSAGE, "git")


def test_agent_signs_for_a_literal_key_and_a_public_key_file(tmp_path: Path, key: Key, agent: str) -> None:
    added = subprocess.run(["ssh-add", str(key.path)], capture_output=True, timeout=30, check=False)
    assert added.returncode == 0, added.stderr
    key.path.rename(tmp_path / "private-elsewhere")  # only the agent holds the private key now
    for spec in (f"key::{key.pub_line}", str(key.pub_path)):
        signer = load_signer(spec)
        assert isinstance(signer, ProgramSigner) and signer.public_key == key.public
        armored = signer.sign(MESSAGE, "git")
        assert parse_signature(armored).public_key == key.public
        _verify_with_ssh_keygen(tmp_path, key, armored)


def test_literal_key_without_agent_fails_in_one_line(key: Key, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSH_AUTH_SOCK", "/nonexistent/agent.sock")
    with pytest.raises(SigningError, match=r"^ssh-keygen -Y sign failed \(exit \d+\): .+") as err:
        load_signer(f"key::{key.pub_line}").sign(MESSAGE, "git")
    assert "\n" not in str(err.value)


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, timeout=60)


def test_signer_from_git_settings(tmp_path: Path, key: Key) -> None:
    repo = tmp_path / "repo"
    _git(tmp_path, "init", "-q", str(repo))
    config = read_signing_config(repo)
    assert not config.configured and config.format == "openpgp"
    with pytest.raises(SigningError, match="uniflow signs with SSH keys only"):
        signer_from_config(config)
    _git(repo, "config", "gpg.format", "ssh")
    with pytest.raises(SigningError, match="no signing key: git config user.signingKey"):
        signer_from_config(read_signing_config(repo))
    _git(repo, "config", "user.signingKey", os.path.relpath(key.path, repo))  # relative to the repo
    config = read_signing_config(repo)
    assert config.configured and config.program == "ssh-keygen"
    assert signer_from_config(config).public_key == key.public
    _git(repo, "config", "--unset", "user.signingKey")
    _git(repo, "config", "gpg.ssh.defaultKeyCommand", f"cat {key.pub_path}")
    signer = signer_from_config(read_signing_config(repo))
    assert isinstance(signer, ProgramSigner) and signer.literal and signer.public_key == key.public


def test_missing_or_bad_key_files_fail_in_one_line(tmp_path: Path) -> None:
    with pytest.raises(SigningError, match=r"cannot read signing key .*nope"):
        load_signer(str(tmp_path / "nope"))
    junk = tmp_path / "junk"
    junk.write_text("not a key\n")
    with pytest.raises(SigningError, match="is not an OpenSSH private or public key"):
        load_signer(str(junk))
    with pytest.raises(SigningError, match="user.signingKey: public key"):
        load_signer("key::ssh-ed25519 AAAA")


# -- refusals --------------------------------------------------------------------------------


@pytest.fixture
def good(key: Key) -> str:
    return load_signer(str(key.path)).sign(MESSAGE, "git")


def test_tampered_message_is_refused(good: str) -> None:
    with pytest.raises(SignatureError, match=r"^signature does not match the signed data \(key SHA256:"):
        verify_signature(parse_signature(good), MESSAGE + b"x", "git")


def test_wrong_namespace_is_refused(good: str) -> None:
    with pytest.raises(SignatureError, match=r"^signature is for namespace 'git', not 'file'$"):
        verify_signature(parse_signature(good), MESSAGE, "file")


def _reblob(good: str, edit: bytes, to: bytes) -> str:
    blob = parse_signature(good).blob
    assert edit in blob
    return armor(blob.replace(edit, to, 1))


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "does not start with -----BEGIN SSH SIGNATURE-----"),
        (
            "-----BEGIN PGP SIGNATURE-----\nabc\n-----END PGP SIGNATURE-----\n",
            "does not start with -----BEGIN",
        ),
        ("-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n", "does not end with -----END SSH SIGNATURE-----"),
        ("-----BEGIN SSH SIGNATURE-----\n%%%\n-----END SSH SIGNATURE-----\n", "is not base64"),
        ("-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n-----END SSH SIGNATURE-----\n", "is truncated"),
        (armor(b"NOTSIG" + b"\0" * 20), "does not start with the SSHSIG magic"),
        (armor(b"SSHSIG\0\0\0\2"), "SSHSIG version 2, expected 1"),
        (armor(b"SSHSIG\0\0\0\1\xff\xff\xff\xff"), "is truncated"),
        (
            "-----BEGIN SSH SIGNATURE-----\n" + "A" * MAX_ARMOR + "\n-----END SSH SIGNATURE-----\n",
            "larger than",
        ),
    ],
)
def test_malformed_armor_is_one_line_error(text: str, error: str) -> None:
    with pytest.raises(SignatureError, match=error) as err:
        parse_signature(text)
    assert "\n" not in str(err.value)


def test_edited_fields_are_refused(good: str, kind: str) -> None:
    with pytest.raises(SignatureError, match="unsupported hash 'sha999'"):
        parse_signature(_reblob(good, b"\0\0\0\x06sha512", b"\0\0\0\x06sha999"))
    with pytest.raises(SignatureError, match="unexpected trailing bytes"):
        parse_signature(armor(parse_signature(good).blob + b"\0"))
    if kind == "ed25519":  # a signature type that does not fit the key
        with pytest.raises(SignatureError, match="does not fit an Ed25519 key"):
            edited = _reblob(good, b"\0\0\0\x53\0\0\0\x0bssh-ed25519", b"\0\0\0\x53\0\0\0\x0bssh-ed25518")
            verify_signature(parse_signature(edited), MESSAGE, "git")


def test_unsupported_key_types_are_refused() -> None:
    # a security-key (FIDO) public key, as ssh-keygen -t ed25519-sk writes it: not verifiable here
    sk_blob = b"".join(
        len(f).to_bytes(4, "big") + f for f in (b"sk-ssh-ed25519@openssh.com", b"\1" * 32, b"ssh:")
    )
    with pytest.raises(SignatureError, match=r"unsupported key type 'sk-ssh-ed25519@openssh.com'"):
        parse_signature(armor(b"SSHSIG\0\0\0\1" + len(sk_blob).to_bytes(4, "big") + sk_blob))


def test_short_rsa_keys_are_refused(keydir: Path) -> None:
    path = keydir / "weak"
    keydir.mkdir(parents=True, exist_ok=True)
    gen = ssh_keygen("-q", "-t", "rsa", "-b", "1024", "-N", "", "-f", str(path))
    if gen.returncode != 0:
        pytest.skip("this ssh-keygen refuses to make 1024-bit RSA keys")
    made = ssh_keygen("-Y", "sign", "-n", "git", "-f", str(path), data=MESSAGE)
    assert made.returncode == 0, made.stderr
    with pytest.raises(SignatureError, match="RSA keys under 2048 bits are refused"):
        parse_signature(made.stdout)


def test_public_key_text_is_checked() -> None:
    from uniflow._authority.sshsig import parse_public_key

    blob = base64.b64encode(b"\0\0\0\x0bssh-ed25519\0\0\0\x20" + b"\1" * 32).decode()
    assert parse_public_key(f"ssh-ed25519 {blob} c").algorithm == "ssh-ed25519"
    with pytest.raises(SignatureError, match="does not match its blob"):
        parse_public_key(f"ssh-rsa {blob}")
    with pytest.raises(SignatureError, match="not 32 bytes"):
        parse_public_key("ssh-ed25519 " + base64.b64encode(b"\0\0\0\x0bssh-ed25519\0\0\0\x01x").decode())


def _python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)


def test_cryptography_is_imported_only_to_verify_or_sign(key: Key) -> None:
    out = _python(
        "import sys\n"
        "import uniflow._authority.gitsign, uniflow._records.signed\n"
        "from uniflow._authority.allowed_signers import AllowedSigners\n"
        f"AllowedSigners.parse('a@b {key.pub_line}')\n"
        "print('cryptography' in sys.modules)\n"
    )
    assert out.stdout.strip() == "False", out.stderr


def test_without_cryptography_one_line_says_what_to_install(good: str, key: Key) -> None:
    out = _python(
        "import sys\n"
        "sys.modules['cryptography'] = None  # as if the signing extra were not installed\n"
        "from uniflow import SignatureError, SigningError\n"
        "from uniflow._authority.signing import load_signer\n"
        "from uniflow._authority.sshsig import parse_signature, verify_signature\n"
        f"sig = parse_signature({good!r})\n"
        "try:\n"
        "    verify_signature(sig, b'm', 'git')\n"
        "except SignatureError as e:\n"
        "    print(e)\n"
        "try:\n"
        f"    load_signer({str(key.path)!r})\n"
        "except SigningError as e:\n"
        "    print(e)\n"
    )
    lines = out.stdout.splitlines()
    assert (
        lines
        == ["SSH signatures need the 'cryptography' package: pip install 'uniflow-registry[signing]'"] * 2
    ), out.stderr
