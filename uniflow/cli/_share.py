"""``uniflow remote|push|pull|hooks|ci``: sharing a registry and automating it.

Thin calls of :mod:`uniflow.sharing` (blobs, push, pull, hooks, ci)
(``ModelRegistry.push`` / ``ModelRegistry.pull``). Only click and the CLI helpers are
imported here; the registry, dulwich and fsspec load inside the commands.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Literal

import click

from .._errors import IntegrityError, RemoteError, UniflowError
from .._format import human_size
from ._common import CliError, echo_json, get_registry, json_option, progress_bar, repo_option
from ._format import Cell, print_line, print_table

if TYPE_CHECKING:
    from .._reports import PromoteReport, PullReport
    from ..sharing.hooks import FetchConfig

__all__ = ["ci", "echo_fetch", "hooks", "pull", "push", "remote"]


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# --------------------------------------------------------------------------- remote
@click.group("remote")
def remote() -> None:
    """Blob remotes: where model bytes are pushed to and pulled from.

    Declared in .uniflow/config.toml (commit it so every clone knows them). The blob remote
    named like the Git remote (default: origin) is used by push and pull.
    """


@remote.command("add")
@click.argument("name")
@click.argument("url")
@click.option(
    "--endpoint-url",
    metavar="URL",
    default=None,
    help="S3-compatible endpoint (MinIO, Ceph ...); default: AWS_ENDPOINT_URL or AWS itself.",
)
@click.option("--force", is_flag=True, help="Replace an existing remote of that name.")
@repo_option
def remote_add(name: str, url: str, endpoint_url: str | None, force: bool, repo: str | None) -> None:
    """Declare blob remote NAME at URL (a directory, s3://bucket/prefix, any fsspec URL)."""
    from ..sharing.blobs import add_remote

    spec = add_remote(
        get_registry(repo).repository.config_source, name, url, endpoint_url=endpoint_url, force=force
    )
    print_line("Added blob remote ", Cell(spec.name, "bold"), f" -> {spec.url}")
    click.echo("Commit .uniflow/config.toml so that clones know it.")


@remote.command("list")
@json_option
@repo_option
def remote_list(as_json: bool, repo: str | None) -> None:
    """List the blob remotes declared in .uniflow/config.toml."""
    from ..sharing.blobs import list_remotes

    registry = get_registry(repo)
    registry.reload_config()
    specs = list_remotes(registry.config)
    if as_json:
        echo_json([s.to_dict() for s in specs])
        return
    if not specs:
        click.echo("No blob remotes (add one with: uniflow remote add origin URL)")
        return
    print_table(["name", "url", "endpoint"], [[s.name, s.url, s.endpoint_url or "-"] for s in specs])


@remote.command("remove")
@click.argument("name")
@repo_option
def remote_remove(name: str, repo: str | None) -> None:
    """Forget blob remote NAME (the bytes it holds are left alone)."""
    from ..sharing.blobs import remove_remote

    spec = remove_remote(get_registry(repo).repository.config_source, name)
    print_line("Removed blob remote ", Cell(spec.name, "bold"), f" ({spec.url})")


# --------------------------------------------------------------------------- push / pull
_ARGS_HELP = "[REMOTE] [NAME]..."


@click.command("push")
@click.argument("args", nargs=-1, metavar=_ARGS_HELP)
@click.option(
    "--all",
    "all_versions",
    is_flag=True,
    help="Make sure the bytes of every version are on the blob remote, not only of new tags.",
)
@click.option(
    "--blob", metavar="NAME", default=None, help="Blob remote to use (default: named like the Git remote)."
)
@click.option(
    "--jobs", "-j", type=click.IntRange(1, 64), default=8, show_default=True, help="Parallel uploads."
)
@json_option
@repo_option
def push(
    args: tuple[str, ...], all_versions: bool, blob: str | None, jobs: int, as_json: bool, repo: str | None
) -> None:
    """Upload the bytes the blob remote lacks, then push model tags and lifecycle refs.

    REMOTE is a Git remote (default: origin); NAMEs limit the push to those models.
    Bytes first, then refs; lifecycle refs only fast-forward: if someone promoted meanwhile
    the push is refused — run `uniflow pull` first.
    \f
    Calls ModelRegistry.push.
    """
    from ..sharing.gitcmd import split_remote_and_names

    registry = get_registry(repo)
    remote_name, names = split_remote_and_names(registry.root, args)
    with progress_bar("Uploading") as progress:
        result = registry.push(
            remote_name, names, blob=blob, all_versions=all_versions, jobs=jobs, progress=progress
        )
    if as_json:
        echo_json(result.to_dict())
        return
    chunks = result.chunks
    if chunks.transferred:
        click.echo(
            f"Uploaded {_plural(chunks.transferred, 'chunk')} ({human_size(chunks.bytes)}) to blob "
            f"remote {result.blob_remote!r}; {chunks.present} already there"
        )
    if result.up_to_date:
        click.echo(f"Everything up to date with {result.remote!r}")
    else:
        parts = []
        if result.versions:
            parts.append(_plural(len(result.versions), "version"))
        if result.lifecycle:
            parts.append(f"lifecycle of {', '.join(result.lifecycle)}")
        click.echo(f"Pushed {' and '.join(parts) or 'stage pointers'} to {result.remote!r}")
    for m in result.behind:
        click.echo(f"note: {result.remote!r} has newer lifecycle events for {m}; run `uniflow pull`")


@click.command("pull")
@click.argument("args", nargs=-1, metavar=_ARGS_HELP)
@click.option("--all", "all_versions", is_flag=True, help="Fetch the bytes of every version now.")
@click.option(
    "--stage",
    "stages",
    multiple=True,
    metavar="STAGE",
    help="Fetch the bytes of the versions holding STAGE now (repeatable).",
)
@click.option(
    "--ours",
    "resolve",
    flag_value="ours",
    default=None,
    help="On a lifecycle conflict, replay your events on top of the remote's.",
)
@click.option(
    "--theirs",
    "resolve",
    flag_value="theirs",
    help="On a lifecycle conflict, take the remote's lifecycle and drop your events.",
)
@click.option(
    "--blob", metavar="NAME", default=None, help="Blob remote to use (default: named like the Git remote)."
)
@click.option(
    "--jobs", "-j", type=click.IntRange(1, 64), default=8, show_default=True, help="Parallel downloads."
)
@json_option
@repo_option
def pull(
    args: tuple[str, ...],
    all_versions: bool,
    stages: tuple[str, ...],
    resolve: str | None,
    blob: str | None,
    jobs: int,
    as_json: bool,
    repo: str | None,
) -> None:
    """Fetch model tags and lifecycle refs, update stages, fetch bytes asked for.

    REMOTE is a Git remote (default: origin); NAMEs limit the pull to those models (and
    fetch their bytes). Without --all, --stage or NAMEs, bytes are fetched when a version
    is loaded.
    \f
    Calls ModelRegistry.pull.
    """
    from .._reports import PullReport
    from ..sharing.gitcmd import split_remote_and_names

    registry = get_registry(repo)
    remote_name, names = split_remote_and_names(registry.root, args)
    resolved: Literal["ours", "theirs"] | None = (
        "ours" if resolve == "ours" else "theirs" if resolve == "theirs" else None
    )
    try:
        with progress_bar("Downloading") as progress:
            result = registry.pull(
                remote_name,
                names,
                all_versions=all_versions,
                stages=list(stages),
                resolve=resolved,
                blob=blob,
                jobs=jobs,
                progress=progress,
            )
    except (IntegrityError, RemoteError) as exc:
        if not as_json and isinstance(exc.result, PullReport):
            _echo_pulled(exc.result)  # what came in stays: say so before the refusals
            for model, lines in exc.result.refused.items():
                for line in lines:
                    click.echo(f"{model}: rejected: {line}", err=True)
        if as_json and exc.result is not None:
            echo_json(
                exc.result.to_dict()
            )  # what was integrated, and which models were rejected; then the error
        raise
    if as_json:
        echo_json(result.to_dict())
        return
    if not _echo_pulled(result):
        click.echo(f"Already up to date with {result.remote!r}")


def _echo_pulled(result: PullReport) -> bool:
    """Print what a pull changed (models moved, chunks fetched); False if nothing."""
    words = {
        "created": "new",
        "fast-forward": "updated",
        "replayed": "your events replayed on top",
        "reset": "reset to the remote's lifecycle",
        "ahead": "ahead (push it)",
    }
    changed = [(m, o) for m, o in result.models.items() if o != "unchanged"]
    for m, o in changed:
        click.echo(f"{m}: {words.get(o, o)}")
    chunks = result.chunks
    if chunks.transferred:
        click.echo(f"Fetched {_plural(chunks.transferred, 'chunk')} ({human_size(chunks.bytes)})")
    return bool(changed or chunks.transferred)


# --------------------------------------------------------------------------- hooks
@click.group("hooks")
def hooks() -> None:
    """Git hooks: upload model bytes on `git push`, fetch registry refs after `git pull`."""


@hooks.command("install")
@click.option(
    "--force",
    is_flag=True,
    help="When a chained hook is already kept and another hook has replaced uniflow's since: "
    "chain that one and keep the older as <hook>.uniflow-backup.",
)
@click.option(
    "--server",
    "server",
    metavar="PATH.git",
    default=None,
    help="Install the pre-receive hook that refuses pushes breaking the policy into this bare "
    "repository instead (docs/governance.md).",
)
@click.option(
    "--trust-root",
    "trust_root",
    metavar="FILE",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="With --server: an allowed-signers file naming the admins, copied into the bare "
    "repository as the root of the policy chain (default: the first policy it holds).",
)
@click.option(
    "--into",
    "into",
    metavar="DIR",
    type=click.Path(file_okay=False),
    default=None,
    help="With --server: write the hook as DIR/uniflow, for a server that runs every hook in "
    "a directory (GitLab's custom_hooks/pre-receive.d). Gitea's hooks/pre-receive.d is found "
    "without it.",
)
@json_option
@repo_option
def hooks_install(
    force: bool, server: str | None, trust_root: str | None, into: str | None, as_json: bool, repo: str | None
) -> None:
    """Install the pre-push and post-merge hooks into this repository.

    A hook already there (git-lfs's, your own) is kept as <hook>.uniflow-chained and runs
    first, with the same arguments and input; `uniflow hooks uninstall` puts it back. Also
    configures the origin remote so that a plain `git fetch` brings lifecycles and version
    tags (docs/sharing.md). With --server PATH.git, installs the pre-receive hook of a bare
    repository on a Git server instead (docs/governance.md).
    """
    from ..sharing.hooks import configure_fetch, install_hooks

    if server is not None:
        _install_server(server, trust_root, into, force, as_json)
        return
    if trust_root is not None or into is not None:
        raise CliError(
            f"{'--trust-root' if trust_root is not None else '--into'} goes with --server PATH.git"
        )
    repository = get_registry(repo).repository
    results = install_hooks(repository, force=force)
    fetch = configure_fetch(repository.root)
    if as_json:
        echo_json([r.to_dict() for r in results])
    else:
        for r in results:
            if r.status == "conflict":
                click.echo(f"not installed {r.path}")
            elif r.status == "chained":
                click.echo(f"chained {r.path} (the hook that was there runs first: {r.chained})")
            else:
                click.echo(f"{r.status} {r.path}" + (f" (chained: {r.chained})" if r.chained else ""))
        echo_fetch(fetch)
    conflicts = [r for r in results if r.status == "conflict"]
    if conflicts:
        raise CliError(conflicts[0].detail)


def _install_server(
    server: str, trust_root: str | None, into: str | None, force: bool, as_json: bool
) -> None:
    """``hooks install --server``: the pre-receive hook, and the trust root it starts from."""
    from pathlib import Path

    from .._ops.incoming import server_root
    from ..sharing.hooks import install_server_hook

    if trust_root is not None:
        from .._ops.policy import load_trust_root

        load_trust_root(trust_root)  # refused before anything is written unless it names admins
    result = install_server_hook(
        Path(server),
        force=force,
        trust_root=Path(trust_root) if trust_root else None,
        into=Path(into) if into is not None else None,
    )
    root = server_root(server) if result.status != "conflict" else None
    if as_json:
        echo_json({**result.to_dict(), "trust_root": root})
    elif result.status == "conflict":
        click.echo(f"not installed {result.path}")
    else:
        chained = f" (the hook that was there runs first: {result.chained})" if result.chained else ""
        click.echo(f"{result.status} {result.path}{chained}")
        click.echo(
            f"trust root: {root}"
            if root
            else "no policy on the default branch yet: the first one pushed becomes the trust root"
        )
    if result.status == "conflict":
        raise CliError(result.detail)


def echo_fetch(fetch: FetchConfig | None) -> None:
    """Say what a plain `git fetch` brings now (what ``configure_fetch`` changed)."""
    from ..sharing.hooks import FETCH_REFSPEC

    if fetch is None:
        click.echo(
            "no Git remote origin yet: once there is one, `uniflow hooks install` makes "
            "`git fetch` bring the registry refs"
        )
        return
    done = [f"lifecycles ({FETCH_REFSPEC})"] if fetch.refspec else []
    done += ["version tags (tagOpt --tags)"] if fetch.tags else []
    if done:
        click.echo(f"git fetch from {fetch.remote!r} now brings {' and '.join(done)}")
    if fetch.prune:
        click.echo(
            f"note: fetches from {fetch.remote!r} prune, which would delete lifecycles never pushed: "
            "lifecycles are left to `uniflow pull`"
        )


@hooks.command("uninstall")
@json_option
@repo_option
def hooks_uninstall(as_json: bool, repo: str | None) -> None:
    """Remove uniflow's hooks and put back the hooks they chained, exactly as they were."""
    from ..sharing.hooks import uninstall_hooks

    results = uninstall_hooks(get_registry(repo).repository)
    if as_json:
        echo_json([r.to_dict() for r in results])
    else:
        for r in results:
            click.echo(r.detail if r.detail else f"{r.status} {r.path}")
    conflicts = [r for r in results if r.status == "conflict"]
    if conflicts:
        raise CliError(conflicts[0].detail)


@hooks.group("run", hidden=True)
def hooks_run() -> None:
    """What the installed hooks call."""


@hooks_run.command("pre-push")
@click.argument("remote_name")
@click.argument("url", required=False)
def hook_pre_push(remote_name: str, url: str | None) -> None:  # noqa: ARG001 (git passes the URL; the remote's name is enough)
    """Upload the bytes of the model versions git is about to push (refs on stdin)."""
    from ..sharing.hooks import run_pre_push

    lines = sys.stdin.read().splitlines()
    result = run_pre_push(get_registry(None).repository, remote_name, lines)
    chunks = result["chunks"]
    if chunks["transferred"]:
        click.echo(
            f"uniflow: uploaded {_plural(chunks['transferred'], 'chunk')} ({human_size(chunks['bytes'])}) "
            f"for {', '.join(result['versions'])}",
            err=True,
        )


@hooks_run.command("pre-receive")
def hook_pre_receive() -> None:
    """Refuse a push of registry refs that breaks the policy (ref lines on stdin; the
    current directory is the bare repository, as git runs server hooks)."""
    import os

    from .._ops.incoming import check_push

    lines = sys.stdin.read().splitlines()
    env = dict(os.environ)
    # the check reads a view of its own (see uniflow._ops.incoming): no git it runs may be
    # pointed at the repository or its quarantine by the hook's environment
    for name in ("DIR", "OBJECT_DIRECTORY", "ALTERNATE_OBJECT_DIRECTORIES", "QUARANTINE_PATH"):
        os.environ.pop(f"GIT_{name}", None)
    refusals = check_push(env.get("GIT_DIR") or ".", lines, env)
    for line in refusals:
        click.echo(f"uniflow: refused {line}", err=True)
    if refusals:
        raise CliError(
            f"push refused: {_plural(len(refusals), 'ref update')} break the policy (docs/governance.md)"
        )


@hooks_run.command("post-merge")
@click.argument("squash", required=False)
def hook_post_merge(squash: str | None) -> None:  # noqa: ARG001 (git passes the squash flag; both kinds fetch)
    """Fetch registry refs from the branch's remote; warn, never fail."""
    from .._ops.incoming import pull_check
    from ..sharing.hooks import run_post_merge

    try:
        repository = get_registry(None).repository
        result = run_post_merge(repository, pull_check(repository))
    except UniflowError as exc:
        click.echo(f"uniflow post-merge: warning: {exc}", err=True)
        return
    changed = [m for m, o in result.models.items() if o != "unchanged"]
    if changed:
        click.echo(f"uniflow: registry refs updated from {result.remote!r}: {', '.join(changed)}", err=True)


# --------------------------------------------------------------------------- ci
@click.group("ci")
def ci() -> None:
    """Continuous integration helpers."""


@ci.command("promote-on-merge")
@click.option(
    "--base", required=True, metavar="REV", help="The target branch before the merge (e.g. old main)."
)
@click.option("--head", required=True, metavar="REV", help="The merge result (e.g. the new main).")
@click.option("--push", "push_refs", is_flag=True, help="Push the promotions to the Git remote.")
@click.option("--remote", "remote_name", metavar="NAME", default=None, help="Git remote (default: origin).")
@click.option("--dry-run", is_flag=True, help="Evaluate the rules, promote nothing.")
@click.option(
    "--no-fetch", is_flag=True, help="Fetch nothing (no history, tags or registry refs): use the clone as is."
)
@click.option(
    "--allow-no-match",
    is_flag=True,
    help="Exit 0 when a rule's from stage holds a version this merge did not bring.",
)
@json_option
@repo_option
def promote_on_merge_cmd(
    base: str,
    head: str,
    push_refs: bool,
    remote_name: str | None,
    dry_run: bool,
    no_fetch: bool,
    allow_no_match: bool,
    as_json: bool,
    repo: str | None,
) -> None:
    """Promote the versions the merge BASE..HEAD brought whose metrics pass the [[promote]] rules.

    Works from a shallow CI checkout (fetches the history, tags and registry refs it needs)
    and after merge commits, squash and rebase merges. Exits 10 (PolicyError) when a
    candidate fails a rule, or when a rule's from stage holds a version that matches nothing
    in the range (unless --allow-no-match); 0 when every candidate was promoted or no rule
    had one.
    """
    from .._errors import PolicyError
    from .._ops.enforce import promote
    from ..sharing.ci import promote_on_merge

    registry = get_registry(repo)
    try:
        report = promote_on_merge(
            registry.repository,
            base,
            head,
            push_refs=push_refs,
            remote=remote_name,
            fetch=not no_fetch,
            dry_run=dry_run,
            allow_no_match=allow_no_match,
            promote=promote,
        )
    except PolicyError as exc:
        if exc.report is not None:
            if as_json:
                echo_json({**exc.report.to_dict(), "error": str(exc)})
            else:
                _print_report(exc.report)
        raise
    if as_json:
        echo_json(report.to_dict())
    else:
        _print_report(report)


def _print_report(report: PromoteReport) -> None:
    acted = [r for r in report.results if r.status != "no-candidate"]
    for r in report.results:
        if r.status == "promoted":
            print_line("promoted ", Cell(f"{r.model} {r.version}", "bold"), f" to {r.to}: {r.detail}")
        elif r.status == "would-promote":
            click.echo(f"would promote {r.model} {r.version} to {r.to}: {r.detail}")
        elif r.status == "already":
            click.echo(r.detail)
        elif r.status == "failed":
            print_line(Cell(f"{r.model} {r.version}", "bold"), f" NOT promoted to {r.to}: {r.detail}")
        elif r.status == "unmatched":
            print_line(Cell(f"{r.model} {r.version}", "bold"), f" NOT matched by rule #{r.rule}: {r.detail}")
    if not acted:
        span = f"{report.base[:12] if report.base else '(root)'}..{report.head[:12]}"
        click.echo(
            f"no promotion rule matched a version registered in {span} ({_plural(report.rules, 'rule')})"
        )
    if report.pushed is not None:
        click.echo(f"pushed to {report.pushed.remote!r}")
