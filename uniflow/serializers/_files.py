"""Registered files and directories, and ONNX models.

``FilesSerializer`` never saves (the registry stores registered paths itself); loading
returns the path. Meta for a single registered file: ``{"kind": "file", "path": <name>}``
(relative to the version directory); otherwise the version directory itself is returned.
``OnnxSerializer`` writes ``model.onnx`` and loads it back as a path (no onnx import).
"""

from __future__ import annotations

import sys
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from .._errors import IntegrityError, SerializationError
from ._base import Serializer

__all__ = ["FilesSerializer", "OnnxSerializer", "framework_for_path"]

ONNX_FILE = "model.onnx"

_BY_SUFFIX: dict[str, str] = {
    ".safetensors": "safetensors",
    ".onnx": "onnx",
    ".pt": "pytorch",
    ".pth": "pytorch",
    ".bin": "pytorch",
    ".skops": "sklearn",
    ".pkl": "pickle-file",
    ".pickle": "pickle-file",
    ".joblib": "pickle-file",
    ".npy": "numpy",
    ".npz": "numpy",
    ".gguf": "gguf",
}


def framework_for_path(path: Path | str) -> str:
    """Framework label for a registered path, by extension; directories are ``"files"``."""
    p = Path(path)
    if p.is_dir():
        return "files"
    return _BY_SUFFIX.get(p.suffix.lower(), "files")


class FilesSerializer(Serializer):
    name = "files"
    framework = "files"
    aliases = ("files", "file", "directory")
    priority = 0

    def can_save(self, obj: Any) -> bool:
        return False

    def save(self, obj: Any, dest: Path, *, trust: bool = False) -> dict[str, Any]:
        raise SerializationError(
            "the files serializer does not save objects; register a file or directory path instead"
        )

    def load(self, src: Path, meta: dict[str, Any], *, trust: bool = False, into: Any = None) -> Any:
        root = Path(src)
        if meta.get("kind") != "file":
            return root
        rel = str(meta.get("path", ""))
        parts = PurePosixPath(rel.replace("\\", "/")).parts
        escapes = rel.startswith("/") or PureWindowsPath(rel).drive or ".." in parts
        if not parts or escapes:
            raise IntegrityError(f"manifest file path {rel!r} points outside the model version")
        target = root.joinpath(*parts)
        if not target.is_file():
            raise SerializationError(f"registered file {rel!r} is missing from the model version")
        return target


class OnnxSerializer(Serializer):
    name = "onnx"
    framework = "onnx"
    aliases = ("onnx",)
    priority = 45

    def can_save(self, obj: Any) -> bool:
        onnx = sys.modules.get("onnx")
        return onnx is not None and isinstance(obj, onnx.ModelProto)

    def save(self, obj: Any, dest: Path, *, trust: bool = False) -> dict[str, Any]:
        try:
            data = obj.SerializeToString()
        except Exception as exc:  # protobuf refuses messages over 2 GiB
            raise SerializationError(
                f"cannot serialize the ONNX model ({exc}); "
                "save it with external data and register the directory instead"
            ) from exc
        (Path(dest) / ONNX_FILE).write_bytes(data)
        return {"file": ONNX_FILE}

    def load(self, src: Path, meta: dict[str, Any], *, trust: bool = False, into: Any = None) -> Any:
        path = Path(src) / ONNX_FILE
        if not path.is_file():
            raise SerializationError(f"{ONNX_FILE} is missing from the model version")
        return path
