"""Serving hand-offs (docs/deploy.md): ``uniflow storage-initializer SRC_URI DEST_DIR``, the
entrypoint of a KServe ``ClusterStorageContainer``, and ``uniflow get --layout triton``
(:func:`get_triton`, called by ``uniflow get``)."""

from __future__ import annotations

import os
from typing import Any

import click

from .._errors import UsageError
from ._common import echo_json, json_option
from ._format import Cell, print_line

__all__ = ["get_triton", "storage_initializer_cmd"]


@click.command("storage-initializer")
@click.argument("src_uri", metavar="SRC_URI")
@click.argument("dest_dir", metavar="DEST_DIR")
@click.option(
    "--blob",
    "blob",
    metavar="URL",
    envvar="UNIFLOW_BLOB",
    help="Read chunks from this blob remote (a directory, s3://...); default: $UNIFLOW_BLOB, "
    "else the one the repository's config names.",
)
@json_option
def storage_initializer_cmd(src_uri: str, dest_dir: str, blob: str | None, as_json: bool) -> None:
    """Write the verified files of the model version SRC_URI names into DEST_DIR (KServe).

    SRC_URI is uniflow://<git-url>#<model>@<stage-or-version>, for example
    uniflow://https://github.com/team/repo.git#clf@production or
    uniflow://git@github.com:team/repo.git#clf@v1.2.0. DEST_DIR is created if absent.
    Git and the blob remote take their credentials from the environment.
    \f
    Calls uniflow.serving.kserve.storage_initialize (ModelRegistry(git_url).get and .export).
    """
    from ..serving.kserve import parse_uniflow_uri, storage_initialize

    parsed = parse_uniflow_uri(src_uri)  # a malformed URI fails before any import of the registry
    mv = storage_initialize(parsed, dest_dir, blob=(blob.strip() or None) if blob is not None else None)
    dest = os.path.abspath(dest_dir)
    count = f"{len(mv.files)} file{'' if len(mv.files) == 1 else 's'}"
    if as_json:
        echo_json(
            {
                "uri": parsed.display,
                "name": mv.name,
                "version": mv.version,
                "stage": mv.stage,
                "content_digest": mv.digest,
                "path": dest,
                "files": [{"path": f.path, "size": f.size, "digest": f.digest} for f in mv.files],
            }
        )
        return
    print_line(
        "Initialized ",
        Cell(f"{mv.name} {mv.version}", "bold"),
        f" ({mv.stage}) from {parsed.display}: {count} -> {dest}",
    )


def get_triton(
    url: str,
    name: str,
    version: str | None,
    stage: str | None,
    *,
    repository: str | None,
    offline: bool,
    blob: str | None,
    as_json: bool,
) -> None:
    """``uniflow get ... --layout triton --model-repository DIR``: deploy into DIR."""
    from .._registry import ModelRegistry
    from ..serving.triton import deploy_triton

    if repository is None:
        raise UsageError("--layout triton needs --model-repository DIR (the Triton model repository)")
    with ModelRegistry(url, offline=offline, blob=blob) as registry:
        d = deploy_triton(registry, name, repository, version=version, stage=stage)
    url_shown = getattr(registry, "url", url)
    if as_json:
        echo_json(_triton_report(url_shown, d))
        return
    state = "already there" if d.unchanged else "written"
    print_line(
        "Deployed ",
        Cell(f"{d.name} {d.version}", "bold"),
        f" ({d.stage}) as Triton version {d.number} ({d.platform}): {os.fspath(d.version_dir)} {state}",
    )
    print_line(f"  config {os.fspath(d.config)} serves version {d.number}")


def _triton_report(url: str, d: Any) -> dict[str, Any]:
    return {
        "url": url,
        "name": d.name,
        "version": d.version,
        "stage": d.stage,
        "layout": "triton",
        "number": d.number,
        "platform": d.platform,
        "path": os.fspath(d.version_dir),
        "config": os.fspath(d.config),
        "unchanged": d.unchanged,
    }
