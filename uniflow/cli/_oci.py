"""``uniflow oci push`` / ``uniflow oci pull``, and ``uniflow get oci://...``: model versions as
OCI artifacts in the CNCF ModelPack format (docs/deploy-oci.md). Thin calls of
``uniflow.oci.push.push_version`` and ``uniflow.oci.pull.pull_artifact``; this module only
adds the all-or-nothing DEST (the staging directory of ``uniflow get``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .._errors import UniflowError
from .._format import human_size
from ._common import CliError, echo_json, get_registry, json_option, progress_bar, repo_option
from ._dest import check_dest, move_into_place
from ._format import Cell, print_line

if TYPE_CHECKING:  # pragma: no cover
    from .._repo import Repository
    from ..oci.pull import OciPullReport

__all__ = ["get_oci", "oci_group"]

_PLAIN_HTTP_HELP = "Talk to the registry over plain HTTP, not HTTPS (a local or test registry)."


def _plain_http(f: click.decorators.FC) -> click.decorators.FC:
    return click.option("--plain-http", "plain_http", is_flag=True, help=_PLAIN_HTTP_HELP)(f)


@click.group("oci")
def oci_group() -> None:
    """Push model versions to OCI registries and pull them back (CNCF ModelPack artifacts).

    A version becomes one OCI artifact: one layer per file, the model's name, version, stage,
    metrics and code commit in its annotations. Credentials come from Docker's config
    (docker login, oras login).
    """


@oci_group.command("push")
@click.argument("name")
@click.argument("version")
@click.argument("target", metavar="oci://HOST/REPO[:TAG]")
@_plain_http
@json_option
@repo_option
def oci_push(name: str, version: str, target: str, plain_http: bool, as_json: bool, repo: str | None) -> None:
    """Push version VERSION of model NAME to an OCI registry.

    The tag is TAG, else the version. Files the repository already holds (from an earlier
    version or push) are not uploaded again; the tag is written last, once every file is there.
    \f
    Calls uniflow.oci.push.push_version(registry.repository, ...).
    """
    from ..oci.push import push_version
    from ..oci.ref import parse_oci_ref

    ref = parse_oci_ref(target)
    with get_registry(repo) as registry, progress_bar(f"push {name}") as progress:
        signer = _verified_signer(registry.repository, name, version)
        report = push_version(
            registry.repository, name, version, ref, plain_http=plain_http, progress=progress, signer=signer
        )
    if as_json:
        echo_json(report.to_dict())
        return
    s = "" if report.files == 1 else "s"
    print_line(
        "Pushed ",
        Cell(f"{report.name} {report.version}", "bold"),
        f" ({report.stage}) to {report.ref}: {report.files} file{s}, {human_size(report.size)} "
        f"({report.uploaded} blobs uploaded, {report.reused} already there)",
    )
    print_line(f"  manifest {report.manifest_digest}  content {report.content_digest}")


def _verified_signer(repo: Repository, name: str, version: str) -> str | None:
    """Who signed the version tag, when its signature verifies against the policy's allowed
    signers (uniflow verify --signatures); None for an unsigned or unverifiable tag."""
    from .._ops.authority import verify_lifecycle

    try:
        resolved = repo.resolve(name, version, None)[0]
        check = verify_lifecycle(repo, name, focus=resolved).tags.get(resolved)
    except UniflowError:
        return None
    return check.signer if check is not None and check.ok else None


def _pull_into(
    source: str,
    dest: Path,
    *,
    force: bool,
    plain_http: bool,
    name: str | None = None,
    version: str | None = None,
    content_digest: str | None = None,
) -> OciPullReport:
    """Pull into a staging directory beside ``dest``, then rename it into place."""
    from ..oci.pull import pull_artifact
    from ..oci.ref import parse_oci_ref
    from ..sharing.staging import begin as begin_staging

    ref = parse_oci_ref(source)  # before anything touches the file system
    check_dest(dest, force)
    staging = begin_staging(dest)  # first removes what killed pulls left beside DEST
    try:
        with progress_bar(f"pull {ref.repository}") as progress:
            report = pull_artifact(
                ref,
                staging.files,
                plain_http=plain_http,
                name=name,
                version=version,
                content_digest=content_digest,
                progress=progress,
            )
        move_into_place(staging.files, dest, force)
    finally:
        shutil.rmtree(staging.root, ignore_errors=True)
    return report


def _print_pulled(report: OciPullReport, dest: Path, as_json: bool) -> None:
    if as_json:
        echo_json({**report.to_dict(), "path": os.fspath(dest)})
        return
    n = len(report.files)
    print_line(
        "Pulled ",
        Cell(f"{report.name} {report.version}", "bold"),
        f" ({report.stage or 'no stage'} when pushed) from {report.ref}: {n} file{'' if n == 1 else 's'}, "
        f"{human_size(report.size)} -> {os.fspath(dest)}",
    )
    print_line(f"  manifest {report.manifest_digest}  content {report.content_digest}")


@oci_group.command("pull")
@click.argument("source", metavar="oci://HOST/REPO:TAG")
@click.argument("dest", metavar="DEST")
@click.option(
    "--content-digest",
    metavar="DIGEST",
    help="Refuse the artifact unless it holds this version content (BLAKE3, as 'models show' prints it).",
)
@click.option(
    "--force", is_flag=True, help="Replace DEST if it exists (only once the new files are complete)."
)
@_plain_http
@json_option
def oci_pull(
    source: str, dest: str, content_digest: str | None, force: bool, plain_http: bool, as_json: bool
) -> None:
    """Pull a model version pushed with 'uniflow oci push' into the new directory DEST.

    Every file is checked against its layer's sha256 and its registered BLAKE3 digest; the
    files are written beside DEST and renamed into place at the end, so DEST never holds a
    partial pull. No repository is needed.
    \f
    Calls uniflow.oci.pull.pull_artifact(...).
    """
    target = Path(dest).absolute()
    report = _pull_into(source, target, force=force, plain_http=plain_http, content_digest=content_digest)
    _print_pulled(report, target, as_json)


def get_oci(
    source: str,
    name: str,
    version: str | None,
    stage: str | None,
    out: str | None,
    *,
    force: bool,
    offline: bool,
    blob: str | None,
    plain_http: bool,
    as_json: bool,
) -> None:
    """``uniflow get oci://HOST/REPO:TAG NAME [VERSION]``: ``oci pull`` into ``-o DIR``
    (default ``./NAME``), refusing an artifact of another model or version."""
    if stage is not None:
        raise CliError("an OCI tag names one version: --stage does not apply to oci:// sources", exit_code=2)
    if offline or blob is not None:
        raise CliError("--offline and --blob apply to Git URLs, not to oci:// sources", exit_code=2)
    target = Path(out if out is not None else name).absolute()
    report = _pull_into(source, target, force=force, plain_http=plain_http, name=name, version=version)
    _print_pulled(report, target, as_json)
