"""OpenSSF model signing (OMS v1.0, key mode): a ``model.sig`` bundle for exported files.

``uniflow models export ... --oms-key KEY`` and ``uniflow get ... --oms-key KEY`` call
:func:`write_oms_bundle` once the files are written and verified. The bundle is what the
``model-signing`` package (sigstore/model-transparency) writes with ``model_signing sign
key``: a Sigstore bundle JSON whose DSSE envelope signs an in-toto statement; the statement's
predicate lists each file's SHA-256 digest and the serialization method (``files``, with the
paths it leaves out), and its subject is the model's name with a digest over those digests.
``model_signing verify key --signature DEST/model.sig --public_key KEY.pub DEST`` checks it.

The package is imported here only (the ``oms`` extra), and only when a bundle is asked for,
so ``import uniflow`` stays light. Hashing and signing are the package's own code; this
module picks the files, checks the key first and translates the package's errors.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from .._errors import InvalidPathError, SigningError, UsageError

__all__ = ["SIGNATURE_NAME", "check_oms", "check_oms_files", "check_oms_key", "write_oms_bundle"]

SIGNATURE_NAME = "model.sig"
"""The bundle's name inside the exported directory (``model_signing``'s default)."""

_INSTALL_HINT = "pip install 'uniflow-registry[oms]'"

# Paths model_signing leaves out of every manifest unless told otherwise (its hashing.Config
# ignores them by default, and `verify key` guesses that default): a model file there would
# be written but never signed.
_UNSIGNED_BY_OMS = (".git", ".gitattributes", ".github", ".gitignore")

_CURVES = ("secp256r1", "secp384r1", "secp521r1")  # the curves model_signing signs with


def _model_signing() -> Any:
    """The ``model_signing`` package, or a one-line :class:`UsageError` naming the extra."""
    try:
        import model_signing.hashing
        import model_signing.signing
    except ImportError as exc:
        raise UsageError(
            f"--oms-key needs the model-signing package ({exc.name or 'model_signing'} "
            f"is missing): {_INSTALL_HINT}"
        ) from exc
    return model_signing


def check_oms_key(key_path: str | os.PathLike[str]) -> None:
    """Refuse, before anything is written, a key model-signing cannot sign with.

    Also checks the ``oms`` extra is installed. The key must be an unencrypted PEM private
    key on NIST P-256, P-384 or P-521 (``openssl ecparam -genkey -name prime256v1``).
    Raises :class:`UsageError` (extra missing) or :class:`SigningError`, one line each.
    """
    _model_signing()
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = Path(key_path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SigningError(f"cannot read the OMS key {path}: {exc.strerror}") from exc
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # encrypted, and no password given
        raise SigningError(f"the OMS key {path} is encrypted; give an unencrypted PEM key") from exc
    except (ValueError, UnicodeError, UnsupportedAlgorithm) as exc:
        raise SigningError(
            f"{path} is not a PEM private key (make one: openssl ecparam -genkey -name prime256v1)"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in _CURVES:
        raise SigningError(f"the OMS key {path} is not an elliptic-curve key on P-256, P-384 or P-521")


def check_oms_files(files: Iterable[str], exclude: Sequence[str] = (SIGNATURE_NAME,)) -> None:
    """Refuse model files the bundle would overwrite (``model.sig``) or leave unsigned
    (``.git*`` at the top, which model-signing never hashes): :class:`InvalidPathError`."""
    for name in files:
        top = PurePosixPath(name).parts[0]
        if name in exclude or top in exclude:
            raise InvalidPathError(f"the model has a file {name!r}: an OMS bundle there would replace it")
        if top in _UNSIGNED_BY_OMS:
            raise InvalidPathError(
                f"the model has {name!r}, which model-signing leaves out of every signature"
            )


def check_oms(key_path: str | os.PathLike[str], files: Iterable[str]) -> None:
    """Both checks, before anything is written: the extra and the key
    (:func:`check_oms_key`), the model's file names (:func:`check_oms_files`)."""
    check_oms_key(key_path)
    check_oms_files(files)


def write_oms_bundle(
    dest_dir: str | os.PathLike[str],
    key_path: str | os.PathLike[str],
    *,
    files: Iterable[str] | None = None,
    exclude: Sequence[str] = (SIGNATURE_NAME,),
) -> Path:
    """Sign the files below ``dest_dir`` with the EC private key at ``key_path``; return the
    bundle's path, ``dest_dir/model.sig`` (the first name of ``exclude``).

    ``files`` (paths relative to ``dest_dir``, ``/``-separated) are the files to sign; by
    default every regular file below ``dest_dir`` but the ``exclude`` paths. The bundle
    records the ``exclude`` paths as ignored, so verifying the directory skips them. It is
    written under a temporary name and renamed into place: a failure (a symlink among the
    files, an I/O error) raises :class:`SigningError` and leaves the files and any earlier
    bundle as they were.
    """
    ms = _model_signing()
    check_oms_key(key_path)
    root = Path(dest_dir).absolute()
    names = sorted(files) if files is not None else _files_below(root, exclude)
    check_oms_files(names, exclude)
    out = root / exclude[0]
    tmp = root / f".{exclude[0]}.tmp-{os.getpid()}"
    hashing = ms.hashing.Config().set_ignored_paths(paths=list(exclude))  # recorded in the bundle
    try:
        manifest = hashing.hash(root, files_to_hash=[root / n for n in names])
        signer = ms.signing.Config().use_elliptic_key_signer(private_key=Path(key_path))
        signer.set_hashing_config(_Fixed(manifest)).sign(root, tmp)
        os.replace(tmp, out)
    except (OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        raise SigningError(f"cannot write the OMS bundle {out}: {exc}") from exc
    return out


class _Fixed:
    """A hashing configuration that returns a manifest already made: the signer hashes
    through its configuration, and the manifest must be that of the files we name."""

    def __init__(self, manifest: Any) -> None:
        self._manifest = manifest

    def hash(self, model_path: Any, **_kw: Any) -> Any:  # noqa: ARG002 (model-signing's hashing signature)
        """The manifest made by :func:`write_oms_bundle` (``model_path`` is the same root)."""
        return self._manifest


def _files_below(root: Path, exclude: Sequence[str]) -> list[str]:
    """Every file below ``root`` (directories are not followed through symlinks; a symlink
    listed here is refused when hashed), ``/``-separated, minus the ``exclude`` paths."""
    out: list[str] = []
    for dirpath, _dirs, filenames in os.walk(root):
        for f in filenames:
            rel = (Path(dirpath) / f).relative_to(root).as_posix()
            if rel not in exclude:
                out.append(rel)
    return sorted(out)
