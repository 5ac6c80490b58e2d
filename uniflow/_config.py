"""``.uniflow/config.toml``: remotes, custom stages and promotion rules (committed).

Example::

    [stages.canary]
    single = true            # holds one version at a time (default true)

    [remotes.origin]
    url = "s3://bucket/prefix"

    [[promote]]
    model = "sentiment_classifier"
    from = "staging"
    to = "production"
    when = ["accuracy >= 0.9"]

    [limits]                 # what a version read from Git may claim (defaults shown)
    max_version_bytes = 1099511627776   # 1 TiB: total size of a version's files
    max_chunks = 1048576                # chunks (and, separately, files) in one version
    max_manifest_bytes = 134217728      # 128 MiB: the manifest blob, checked before decoding
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ._errors import RepositoryError
from ._stages import SINGLE_HOLDER_DEFAULT, valid_custom_stage_name

__all__ = [
    "load_config",
    "save_config",
    "stage_table",
    "init_layout",
    "Limits",
    "limits_table",
    "GITIGNORE",
    "CONFIG_HEADER",
]

GITIGNORE = "# uniflow: local object store, writes in flight, caches and run records\nobjects/\ntmp/\ncache/\nruns/\n"
CONFIG_HEADER = (
    "# uniflow configuration (commit this file).\n"
    "# [stages.NAME] single = true   declares a custom stage\n"
    "# [remotes.NAME] url = \"...\"    declares a blob remote\n"
    "# [[promote]] model/from/to/when declares a promote-on-merge rule\n"
)


def load_config(uniflow_dir: Path) -> dict[str, Any]:
    path = uniflow_dir / "config.toml"
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise RepositoryError(f"{path} is not valid TOML: {exc}") from exc
    except OSError as exc:
        raise RepositoryError(f"cannot read {path}: {exc.strerror}") from exc
    return data


def save_config(uniflow_dir: Path, data: dict[str, Any]) -> None:
    import tomli_w

    path = uniflow_dir / "config.toml"
    tmp = path.with_suffix(f".toml.{os.getpid()}.tmp")
    try:
        tmp.write_text(CONFIG_HEADER + "\n" + tomli_w.dumps(data))
        os.replace(tmp, path)
    except OSError as exc:
        raise RepositoryError(f"cannot write {path}: {exc.strerror}") from exc


def stage_table(config: dict[str, Any]) -> dict[str, bool]:
    """Every known stage -> whether it holds a single version."""
    table = dict(SINGLE_HOLDER_DEFAULT)
    stages = config.get("stages", {})
    if not isinstance(stages, dict):
        raise RepositoryError("[stages] in .uniflow/config.toml must be a table")
    for name, spec in stages.items():
        if not valid_custom_stage_name(name):
            raise RepositoryError(f"invalid custom stage name {name!r} in .uniflow/config.toml")
        single = spec.get("single", True) if isinstance(spec, dict) else True
        table[name] = bool(single)
    return table


@dataclass(frozen=True)
class Limits:
    """Bounds on what a manifest read from Git may claim (``[limits]`` in config.toml).

    A manifest beyond them is an :class:`IntegrityError`, so a hostile version can never make
    a reader allocate or transfer more than this. The defaults fit a 1 TiB version cut at
    the chunker's 1 MiB average (about 2^20 chunks); raise them for larger models.
    """

    max_version_bytes: int = 1 << 40
    max_chunks: int = 1 << 20
    max_manifest_bytes: int = 128 << 20


def limits_table(config: dict[str, Any]) -> Limits:
    """The :class:`Limits` of a config: defaults overridden by ``[limits]``."""
    table = config.get("limits", {})
    if not isinstance(table, dict):
        raise RepositoryError("[limits] in .uniflow/config.toml must be a table")
    known = {f.name for f in fields(Limits)}
    values: dict[str, int] = {}
    for key, value in table.items():
        if key not in known:
            raise RepositoryError(
                f"unknown key {key!r} in [limits] of .uniflow/config.toml (known: {', '.join(sorted(known))})"
            )
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RepositoryError(f"[limits] {key} in .uniflow/config.toml must be a positive integer, not {value!r}")
        values[key] = value
    return Limits(**values)


def init_layout(uniflow_dir: Path) -> bool:
    """Create ``.uniflow/`` with its config and .gitignore; True if anything was created."""
    created = False
    try:
        uniflow_dir.mkdir(parents=True, exist_ok=True)
        gi = uniflow_dir / ".gitignore"
        if not gi.exists():
            gi.write_text(GITIGNORE)
            created = True
        cfg = uniflow_dir / "config.toml"
        if not cfg.exists():
            cfg.write_text(CONFIG_HEADER)
            created = True
    except OSError as exc:
        raise RepositoryError(f"cannot create {uniflow_dir}: {exc.strerror}") from exc
    return created
