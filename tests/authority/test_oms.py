"""OpenSSF model signing (``--oms-key``): ``uniflow models export`` and ``uniflow get`` write
``DEST/model.sig``, and the ``model-signing`` package itself (its ``verify key`` command and
its Python API) accepts it, refuses it once a file is changed, and a bad key or a missing
extra stops the command with one line before anything is written."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import GIT_ENV, cli, make_repo, model_dir, open_registry, publish_registry, tree_bytes

pytest.importorskip("model_signing")
if shutil.which("openssl") is None:  # the keys are made as a user makes them
    pytest.skip("openssl is not installed", allow_module_level=True)

from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec, ed25519  # noqa: E402


def _openssl_key(directory: Path, name: str = "oms") -> tuple[Path, Path]:
    """``openssl ecparam -genkey -name prime256v1`` and its public key, as a user makes them."""
    key, pub = directory / f"{name}.pem", directory / f"{name}.pub"
    subprocess.run(
        ["openssl", "ecparam", "-genkey", "-name", "prime256v1", "-noout", "-out", str(key)],
        check=True,
        timeout=60,
        capture_output=True,
    )
    subprocess.run(
        ["openssl", "ec", "-in", str(key), "-pubout", "-out", str(pub)],
        check=True,
        timeout=60,
        capture_output=True,
    )
    return key, pub


def _cryptography_key(directory: Path, curve: ec.EllipticCurve, name: str) -> tuple[Path, Path]:
    """A PKCS#8 EC key made with cryptography, and its public key."""
    private = ec.generate_private_key(curve)
    key, pub = directory / f"{name}.pem", directory / f"{name}.pub"
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    pub.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key, pub


def _verify_cli(dest: Path, pub: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``model_signing verify key`` (the package's own command line)."""
    args = ["verify", "key", "--signature", str(dest / "model.sig"), "--public_key", str(pub), *extra]
    return subprocess.run(
        [sys.executable, "-m", "model_signing", *args, str(dest)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _verify_api(dest: Path, pub: Path, *, ignore_unsigned: bool = False) -> None:
    """The package's Python API; raises ValueError on a mismatch."""
    from model_signing import verifying

    config = verifying.Config().use_elliptic_key_verifier(public_key=pub)
    config.set_ignore_unsigned_files(ignore_unsigned).verify(dest, dest / "model.sig")


def _statement(bundle: Path) -> dict[str, Any]:
    """The in-toto statement inside the bundle's DSSE envelope."""
    doc = json.loads(bundle.read_text())
    envelope = doc["dsseEnvelope"]
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    statement: dict[str, Any] = json.loads(base64.b64decode(envelope["payload"]))
    return statement


@pytest.fixture
def models_repo(tmp_path: Path) -> Path:
    """A repository with model ``clf`` v1 (files at the top and in a sub-directory)."""
    repo = make_repo(tmp_path / "repo")
    src = model_dir(tmp_path / "src", 3, seed=3)
    (src / "tokenizer").mkdir()
    (src / "tokenizer" / "vocab.json").write_text('{"a": 1}\n')
    reg = open_registry(repo)
    reg.register(model=str(src), name="clf", version="v1.0.0")
    reg.close()
    return repo


def test_export_with_oms_key_verifies_with_model_signing(models_repo: Path, tmp_path: Path) -> None:
    key, pub = _openssl_key(tmp_path)
    dest = tmp_path / "out"
    r = cli(models_repo, "models", "export", "clf", "v1.0.0", str(dest), "--oms-key", str(key))
    assert f"OpenSSF model signature -> {dest / 'model.sig'}" in r.stdout
    files = tree_bytes(tmp_path / "src")
    assert {p: b for p, b in tree_bytes(dest).items() if p != "model.sig"} == files

    r = _verify_cli(dest, pub)
    assert r.returncode == 0 and "Verification succeeded" in r.stdout, (r.stdout, r.stderr)
    _verify_api(dest, pub)

    # The bundle: a Sigstore bundle, key mode (a public-key hint, no transparency log), whose
    # statement lists every exported file with its SHA-256 and the serialization method.
    doc = json.loads((dest / "model.sig").read_text())
    assert doc["mediaType"].startswith("application/vnd.dev.sigstore.bundle")
    assert doc["verificationMaterial"]["tlogEntries"] == []
    statement = _statement(dest / "model.sig")
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    assert statement["subject"][0]["name"] == "out"
    resources = {r["name"]: r["digest"] for r in statement["predicate"]["resources"]}
    assert resources == {p: hashlib.sha256(b).hexdigest() for p, b in files.items()}
    serialization_ = statement["predicate"]["serialization"]
    assert serialization_["method"] == "files" and serialization_["hash_type"] == "sha256"
    assert "model.sig" in serialization_["ignore_paths"]


def test_a_changed_exported_file_fails_verification(models_repo: Path, tmp_path: Path) -> None:
    key, pub = _openssl_key(tmp_path)
    dest = tmp_path / "out"
    cli(models_repo, "models", "export", "clf", "v1.0.0", str(dest), "--oms-key", str(key), "--json")
    target = dest / "tokenizer" / "vocab.json"
    target.write_text('{"a": 2}\n')
    r = _verify_cli(dest, pub)
    assert r.returncode != 0 and "tokenizer/vocab.json" in r.stderr, (r.stdout, r.stderr)
    with pytest.raises(ValueError, match="tokenizer/vocab.json"):
        _verify_api(dest, pub)
    # and a different key does not verify the untouched bundle either
    target.write_text('{"a": 1}\n')
    _verify_api(dest, pub)
    _other, other_pub = _openssl_key(tmp_path, "other")
    assert _verify_cli(dest, other_pub).returncode != 0


def test_export_into_a_directory_with_other_files_signs_only_the_model(
    models_repo: Path, tmp_path: Path
) -> None:
    key, pub = _cryptography_key(tmp_path, ec.SECP384R1(), "p384")
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "notes.txt").write_text("not part of the model\n")
    r = cli(models_repo, "models", "export", "clf", "v1.0.0", str(dest), "--oms-key", str(key), "--json")
    assert json.loads(r.stdout)["oms_bundle"] == str(dest / "model.sig")
    names = {r["name"] for r in _statement(dest / "model.sig")["predicate"]["resources"]}
    assert "notes.txt" not in names and names == set(tree_bytes(tmp_path / "src"))
    with pytest.raises(ValueError, match="notes.txt"):  # an extra file is not what was signed
        _verify_api(dest, pub)
    _verify_api(dest, pub, ignore_unsigned=True)
    assert _verify_cli(dest, pub, "--ignore_unsigned_files").returncode == 0


def test_get_by_url_with_oms_key_verifies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIFLOW_CACHE_DIR", str(tmp_path / "user-cache"))
    published = publish_registry(tmp_path)
    key, pub = _openssl_key(tmp_path)
    work = tmp_path / "deploy"
    work.mkdir()
    url = f"file://{published['bare']}"
    r = cli(work, "get", url, "clf", "--stage", "production", "--oms-key", str(key), "--json")
    report = json.loads(r.stdout)
    dest = work / "clf"
    assert report["oms_bundle"] == str(dest / "model.sig")
    assert {p: b for p, b in tree_bytes(dest).items() if p != "model.sig"} == tree_bytes(published["v1"])
    r2 = _verify_cli(dest, pub)
    assert r2.returncode == 0, (r2.stdout, r2.stderr)
    _verify_api(dest, pub)
    assert _statement(dest / "model.sig")["subject"][0]["name"] == "clf"  # DIR's name, not the staging's
    # nothing else beside DIR: the staging directory is gone
    assert sorted(p.name for p in work.iterdir()) == ["clf"]


def _one_line_error(r: subprocess.CompletedProcess[str]) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


def _bad_keys(tmp_path: Path) -> dict[str, Path]:
    """Keys model-signing cannot sign with: not PEM, an Ed25519 key, a public key, missing."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "garbage.pem").write_text("not a key\n")
    ed = ed25519.Ed25519PrivateKey.generate()
    (bad / "ed25519.pem").write_bytes(
        ed.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    _key, pub = _openssl_key(bad, "ec")
    return {
        "is not a PEM private key": bad / "garbage.pem",
        "is not an elliptic-curve key": bad / "ed25519.pem",
        "not a PEM private key": pub,  # a public key where the private one goes
        "cannot read the OMS key": bad / "missing.pem",
    }


def test_a_bad_key_stops_export_and_get_before_anything_is_written(
    models_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "earlier.txt").write_text("kept\n")
    before = tree_bytes(dest)
    for message, key in _bad_keys(tmp_path).items():
        r = cli(models_repo, "models", "export", "clf", "v1.0.0", str(dest), "--oms-key", str(key), code=2)
        assert message in _one_line_error(r)
        assert tree_bytes(dest) == before  # no model file, no bundle: DEST as it was
        r = cli(
            models_repo,
            "models",
            "export",
            "clf",
            "v1.0.0",
            str(tmp_path / "new"),
            "--oms-key",
            str(key),
            code=2,
        )
        assert not (tmp_path / "new").exists()

    monkeypatch.setenv("UNIFLOW_CACHE_DIR", str(tmp_path / "user-cache"))
    published = publish_registry(tmp_path / "pub")
    work = tmp_path / "deploy"
    work.mkdir()
    r = cli(
        work,
        "get",
        f"file://{published['bare']}",
        "clf",
        "--oms-key",
        str(tmp_path / "bad" / "garbage.pem"),
        code=2,
    )
    assert "is not a PEM private key" in _one_line_error(r)
    assert list(work.iterdir()) == []  # no DIR, no staging left beside it


def test_write_oms_bundle_signs_a_directory_and_re_signing_replaces_the_bundle(tmp_path: Path) -> None:
    from uniflow import SigningError
    from uniflow._ops.oms import write_oms_bundle

    key, pub = _cryptography_key(tmp_path, ec.SECP256R1(), "api")
    dest = model_dir(tmp_path / "m", 2)
    assert write_oms_bundle(dest, key) == dest / "model.sig"
    _verify_api(dest, pub)
    (dest / "part-000.bin").write_bytes(b"retrained")
    with pytest.raises(ValueError):
        _verify_api(dest, pub)
    write_oms_bundle(dest, key)  # the old model.sig is not signed over, it is replaced
    _verify_api(dest, pub)
    assert sorted(p.name for p in dest.iterdir()) == ["model.sig", "part-000.bin", "part-001.bin"]

    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    before = (dest / "model.sig").read_bytes()
    with pytest.raises(SigningError, match="is encrypted"):
        write_oms_bundle(dest, encrypted)
    assert (dest / "model.sig").read_bytes() == before


def test_a_model_file_named_model_sig_is_refused(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    src = model_dir(tmp_path / "src", 1)
    (src / "model.sig").write_text("the model's own file\n")
    reg = open_registry(repo)
    reg.register(model=str(src), name="m", version="v1.0.0")
    reg.close()
    key, _pub = _openssl_key(tmp_path)
    r = cli(repo, "models", "export", "m", "v1.0.0", str(tmp_path / "out"), "--oms-key", str(key), code=2)
    assert "'model.sig'" in _one_line_error(r)
    assert not (tmp_path / "out").exists()


def test_missing_extra_is_one_line_naming_it(models_repo: Path, tmp_path: Path) -> None:
    key, _pub = _openssl_key(tmp_path)
    dest = tmp_path / "out"
    # model_signing blocked (an entry of None makes its import fail), as if the extra were absent
    code = (
        "import sys; sys.modules['model_signing'] = None\n"
        "from uniflow.cli import main\n"
        f"sys.exit(main(['models', 'export', 'clf', 'v1.0.0', {str(dest)!r}, '--oms-key', {str(key)!r}]))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=models_repo,
        env={**os.environ, **GIT_ENV, "UNIFLOW_FORCE_TTY": "0"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "pip install 'uniflow-registry[oms]'" in _one_line_error(r)
    assert not dest.exists()


def test_import_uniflow_does_not_load_model_signing() -> None:
    code = (
        "import sys, uniflow, uniflow.cli._get, uniflow.cli._history, uniflow._ops.oms\n"
        "print('model_signing' in sys.modules)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert r.stdout.strip() == "False"
