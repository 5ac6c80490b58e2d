"""``uniflow get URL NAME [VERSION]``: the verified files of a model version, from a Git URL,
without a clone (docs/remote.md). A thin call of ``ModelRegistry(url)``: ``get`` resolves
the version, ``export`` writes its files; this module only adds the all-or-nothing DIR.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import click

from .._errors import UsageError
from .._format import human_size
from ._common import (
    CliError,
    b3sum_option,
    echo_json,
    json_option,
    oms_key_option,
    oms_signer,
    print_b3sums,
    progress_bar,
    written_b3sums,
)
from ._dest import check_dest as _check_dest
from ._dest import move_into_place as _move_into_place
from ._format import Cell, print_line

__all__ = ["get_cmd"]


@click.command("get")
@click.argument("url")
@click.argument("name")
@click.argument("version", required=False)
@click.option("--stage", "-s", metavar="STAGE", help="The version this stage holds (instead of VERSION).")
@click.option("-o", "--out", "out", metavar="DIR", help="Where to write the files (default: ./NAME).")
@click.option(
    "--force", is_flag=True, help="Replace DIR if it exists (only once the new files are complete)."
)
@click.option("--offline", is_flag=True, help="Use the cache alone: no network for the Git side.")
@click.option(
    "--blob", "blob", metavar="URL", help="Read chunks from this blob remote (a directory, s3://...)."
)
@oms_key_option
@click.option(
    "--layout",
    type=click.Choice(["plain", "triton"]),
    default="plain",
    show_default=True,
    help="plain: the files in DIR; triton: a version of a Triton model repository (--model-repository).",
)
@click.option(
    "--model-repository",
    "model_repository",
    metavar="DIR",
    help="The Triton model repository to write into (with --layout triton).",
)
@click.option("--plain-http", is_flag=True, help="For an oci:// URL: plain HTTP, not HTTPS.")
@click.option(
    "--require-signed",
    is_flag=True,
    help="Serve the version only if its signatures and the registry's policy vouch for it "
    "(a stage's holder: its promotion chain), and never an older lifecycle than one seen before.",
)
@click.option(
    "--trust-root",
    "trust_root",
    metavar="FILE",
    help="An allowed-signers file naming the policy's admins: the root the policy chain is "
    "verified from (default: the first policy the cache saw, trust on first use).",
)
@b3sum_option
@json_option
def get_cmd(
    url: str,
    name: str,
    version: str | None,
    stage: str | None,
    out: str | None,
    force: bool,
    offline: bool,
    blob: str | None,
    oms_key: str | None,
    layout: str,
    model_repository: str | None,
    plain_http: bool,
    require_signed: bool,
    trust_root: str | None,
    b3sum: bool,
    as_json: bool,
) -> None:
    """Write the verified files of a model version from the registry at URL to DIR.

    URL is a Git URL (https://, ssh://, git://, file://, user@host:path) or a bare
    repository; no clone is made. The version is VERSION, the holder of --stage, or the
    newest. Files are written beside DIR and renamed into place at the end: DIR never holds
    a partial download. With --oms-key, the key is checked before the download and
    DIR/model.sig is written once DIR is in place. With --layout triton the version is
    written into the Triton model repository DIR as DIR/NAME/<n>/model.onnx (or model.pt)
    with DIR/NAME/config.pbtxt.
    URL may also be oci://HOST/REPO:TAG (pushed with 'uniflow oci push').
    With --require-signed nothing is written unless the version's signatures satisfy the
    registry's policy (docs/governance.md, "Consumers"); without it, a problem is a warning
    once the registry has a policy. With --b3sum (a Git URL, --layout plain), each file's
    BLAKE3 digest is printed as b3sum prints it.
    \f
    Calls ModelRegistry(URL).get(...) and .export(...).
    """
    from ..sharing.giturl import parse_git_url

    if version is not None and stage is not None:
        raise CliError("give either VERSION or --stage, not both")
    signed = url.lower().startswith("oci://") or layout == "triton" or model_repository is not None
    if (require_signed or trust_root is not None) and signed:
        raise CliError("--require-signed and --trust-root apply to a Git URL with --layout plain")
    if b3sum and signed:
        raise CliError("--b3sum applies to a Git URL with --layout plain")
    if url.lower().startswith("oci://"):  # an OCI artifact (docs/deploy-oci.md), not a Git URL
        from ._oci import get_oci

        get_oci(
            url, name, version, stage, out, force=force, offline=offline, blob=blob,
            plain_http=plain_http, as_json=as_json,
        )  # fmt: skip
        return
    if parse_git_url(url) is None:
        raise UsageError(
            f"{url!r} is not a Git URL or a bare repository (for a clone: uniflow models export)"
        )
    if layout == "triton" or model_repository is not None:
        from ._serve import get_triton

        if layout != "triton" or out is not None or force or oms_key is not None:
            raise CliError("--model-repository goes with --layout triton, without -o, --force and --oms-key")
        get_triton(
            url,
            name,
            version,
            stage,
            repository=model_repository,
            offline=offline,
            blob=blob,
            as_json=as_json,
        )
        return
    _get_from_git(url, name, version, stage, out, force=force, offline=offline, blob=blob,
                  oms_key=oms_key, require_signed=require_signed, trust_root=trust_root,
                  b3sum=b3sum, as_json=as_json)  # fmt: skip


def _get_from_git(
    url: str,
    name: str,
    version: str | None,
    stage: str | None,
    out: str | None,
    *,
    force: bool,
    offline: bool,
    blob: str | None,
    oms_key: str | None,
    require_signed: bool,
    trust_root: str | None,
    b3sum: bool,
    as_json: bool,
) -> None:
    """``uniflow get`` from a Git URL into DIR: staged beside it, renamed into place, then
    the OpenSSF bundle when asked for, and the report."""
    dest = Path(out if out is not None else name).absolute()
    _check_dest(dest, force)
    _begin_sync(url, offline, require_signed)  # the mirror syncs while the registry's modules load
    from .._registry import RemoteRegistry
    from ..sharing.staging import begin as begin_staging

    mode = "require" if require_signed else None
    with RemoteRegistry(url, offline=offline, blob=blob, signatures=mode, trust_root=trust_root) as registry:
        mv = registry.get(name, version=version, stage=stage)  # resolved and verified once
        commit, _manifest = registry.repository.index.manifest(name, mv.version)
        tag = registry.repository.index.tag_sha(name, mv.version)
        oms = oms_signer(oms_key, mv)  # checks the key before any download
        staging = begin_staging(dest)  # first removes what killed gets left beside DIR
        try:
            with progress_bar(f"get {name}") as progress:
                # checked by get above: the same version, not verified twice
                registry.export(name, staging.files, version=mv.version, progress=progress, signatures="off")
            _move_into_place(staging.files, dest, force)
        finally:
            shutil.rmtree(staging.root, ignore_errors=True)
    bundle = oms(dest)
    sums = written_b3sums(dest, [f.path for f in mv.files]) if b3sum else None
    url_shown = getattr(registry, "url", url)
    verified = _verified_line(require_signed, trust_root)
    if as_json:
        report = {**_report(url_shown, mv, commit, tag, dest, sums), "oms_bundle": bundle}
        echo_json({**report, "signatures": {"required": require_signed, "trust_root": verified}})
        return
    print_line(
        "Got ",
        Cell(f"{mv.name} {mv.version}", "bold"),
        f" ({mv.stage}) from {url_shown}: "
        f"{len(mv.files)} file{'' if len(mv.files) == 1 else 's'}, {human_size(mv.size)} -> "
        f"{os.fspath(dest)}",
    )
    print_line(f"  commit {commit}  content {mv.digest}")
    if bundle is not None:
        print_line(f"  OpenSSF model signature -> {bundle}")
    if verified is not None:
        print_line(f"  signatures verified; trust root: {verified}")
    if sums is not None:
        print_b3sums(sums)


def _begin_sync(url: str, offline: bool, verifying: bool) -> None:
    """Start syncing the mirror of ``url`` on a thread (``sharing.mirror.begin_sync``; with
    the policy history when the get will verify signatures); the registry opened next takes
    its result, or raises its error. Nothing is started when there is no cache directory:
    opening the registry says so."""
    from .._records.objcache import cache_home
    from ..sharing.giturl import parse_git_url
    from ..sharing.mirror import Mirror, begin_sync

    parsed, home = parse_git_url(url), cache_home()
    if parsed is not None and home is not None:
        # without --require-signed the get verifies (warn) once a policy exists: None asks the
        # sync for the policy history only then (Mirror.sync)
        begin_sync(Mirror(parsed, home), offline=offline, history=True if verifying else None)


def _verified_line(require_signed: bool, trust_root: str | None) -> str | None:
    """What the signatures were verified from (None: not required)."""
    if not require_signed:
        return None
    if trust_root is not None:
        return f"pinned by --trust-root {trust_root}"
    return "the first policy this cache saw (trust on first use; pin one with --trust-root FILE)"


def _report(
    url: str, mv: Any, commit: str, tag: str | None, dest: Path, sums: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "url": url,
        "name": mv.name,
        "version": mv.version,
        "stage": mv.stage,
        "commit": commit,
        "tag": tag,
        "tag_ref": mv.tag_ref,
        "content_digest": mv.digest,
        "size": mv.size,
        "path": os.fspath(dest),
        "files": [
            {
                "path": f.path,
                "size": f.size,
                "digest": f.digest,
                **({"b3sum": sums[f.path]} if sums is not None else {}),
            }
            for f in mv.files
        ],
    }
