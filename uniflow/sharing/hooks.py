"""The Git hooks that keep bytes and refs in step: ``pre-push`` uploads the chunks of every
model tag being pushed before git sends it; ``post-merge`` fetches the registry refs after
``git pull``.

Both are tiny shell stubs calling ``uniflow hooks run NAME`` with an isolated interpreter
(``python -I``), or the ``uniflow`` console script from an absolute PATH entry outside the
work tree, so no module committed to the work tree can shadow uniflow or its dependencies.

They chain: :func:`install_hooks` keeps a hook that was there before (git-lfs's, a team's
own) as ``<name>.uniflow-chained``, byte for byte, and the stub runs it first with the same
arguments and standard input (``pre-push`` buffers git's lines and feeds them to both); its
failure is the hook's failure. :func:`uninstall_hooks` moves it back. This is pre-commit's
"migration mode" (``<hook>.legacy``), under a name of uniflow's own so that the two never
take each other's file; git-lfs itself does not chain (``git lfs install`` refuses a hook
that is not its own, see docs/sharing.md).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import RepositoryError, UsageError
from .._records.eventtags import event_tag_version
from .._records.refs import (
    EVENT_TAGS_PREFIX,
    LIFECYCLE_PREFIX,
    STAGES_PREFIX,
    TAGS_PREFIX,
    UNIFLOW_PREFIX,
    parse_tag_name,
)
from .._reports import PullReport
from .._types import ProgressFn
from .blobs import JOBS, TransferStats
from .gitcmd import ZERO, git_remotes, run_git
from .pull import PolicyCheck, pull
from .push import blob_remote_for, no_blob_remote, upload_versions

if TYPE_CHECKING:  # pragma: no cover
    from .._repo import Repository

__all__ = [
    "CHAINED_SUFFIX",
    "FETCH_REFSPEC",
    "HOOK_NAMES",
    "SERVER_HOOK",
    "SERVER_HOOK_FILE",
    "FetchConfig",
    "HookResult",
    "configure_fetch",
    "hook_script",
    "hooks_dir",
    "install_hooks",
    "install_server_hook",
    "run_post_merge",
    "run_pre_push",
    "uninstall_hooks",
]

log = logging.getLogger("uniflow.hooks")


# ---------------------------------------------------------------------- hooks
HOOK_NAMES = ("pre-push", "post-merge")
#: the hook ``hooks install --server`` puts in a bare repository
SERVER_HOOK = "pre-receive"
#: the file uniflow's server hook is in a directory of hooks that all run (``pre-receive.d``)
SERVER_HOOK_FILE = "uniflow"
#: the hook that was in place before uniflow's, kept next to it and run first
CHAINED_SUFFIX = ".uniflow-chained"
#: ``--force`` over a conflict keeps the older chained hook under this name
BACKUP_SUFFIX = ".uniflow-backup"
_MARKER = "# uniflow-hook: "
_PYTHON_LINE = 'UNIFLOW_PYTHON="${UNIFLOW_PYTHON:-}"'
_HOOK_DOC = {
    "pre-push": (
        "# Uploads the bytes (chunks) of every model version being pushed to the blob remote\n"
        "# named like the git remote, before git sends the tags, so `git push --tags` never\n"
        "# publishes a version whose bytes are missing. A failed upload refuses the push.\n"
    ),
    "post-merge": (
        "# Fetches the registry refs (model tags, lifecycle) from the branch's remote after\n"
        "# `git pull`; never fails the merge (problems are printed as warnings).\n"
    ),
    SERVER_HOOK: (
        "# Refuses a push of lifecycle refs (refs/uniflow/models/*) or version tags whose new\n"
        "# commits break the policy on the default branch (docs/governance.md).\n"
    ),
}
_HOOK_SKIP = {"pre-push": '[ -n "$UNIFLOW_IN_PUSH" ] && exit 0   # `uniflow push` uploads the bytes itself\n'}
_HOOK_FALLBACK = {
    "pre-push": (
        f"if grep -q -e {TAGS_PREFIX}/ -e {UNIFLOW_PREFIX}/; then\n"
        '    echo "uniflow pre-push: uniflow is not installed, cannot upload model bytes; push refused" >&2\n'
        "    exit 1\n"
        "fi\n"
        "exit 0\n"
    ),
    "post-merge": 'echo "uniflow post-merge: uniflow is not installed; registry refs not fetched" '
    ">&2\nexit 0\n",
    SERVER_HOOK: (
        f"if grep -q -e ' {TAGS_PREFIX}/' -e ' {LIFECYCLE_PREFIX}/'; then\n"
        '    echo "uniflow pre-receive: uniflow is not installed to check the policy; push refused" >&2\n'
        "    exit 1\n"
        "fi\n"
        "exit 0\n"
    ),
}
# Runs the hook kept as <name>.uniflow-chained as Git ran it. A sh or bash script is sourced
# by a new shell whose $0 is this hook's path, because hook managers find their own files
# from $0 (Husky: `basename "$0"` names the hook, `dirname "$0"` holds its helper); anything
# else (other interpreters, shebang options, binaries) is executed.
_HOOK_RUN_CHAINED = (
    "uniflow_chained() {",
    '    IFS= read -r UNIFLOW_SHEBANG < "$UNIFLOW_CHAINED" || :',
    '    case "$UNIFLOW_SHEBANG" in',
    '        "#!/bin/sh" | "#!/usr/bin/env sh")',
    """            UNIFLOW_CHAINED="$UNIFLOW_CHAINED" sh -c '. "$UNIFLOW_CHAINED"' "$0" "$@" ;;""",
    '        "#!/bin/bash" | "#!/usr/bin/env bash")',
    """            UNIFLOW_CHAINED="$UNIFLOW_CHAINED" bash -c '. "$UNIFLOW_CHAINED"' "$0" "$@" ;;""",
    '        *) "$UNIFLOW_CHAINED" "$@" ;;',
    "    esac",
    "}",
)
# How the chained hook runs before uniflow's own part (uniflow_hook), line by line.
_HOOK_CHAIN = {
    # git's lines are read once and fed to both; the old hook's failure refuses the push
    "pre-push": (
        "UNIFLOW_INPUT=$(cat; echo .)   # git's lines, kept whole (trailing newlines too) for both",
        "UNIFLOW_INPUT=${UNIFLOW_INPUT%.}",
        'printf "%s" "$UNIFLOW_INPUT" | uniflow_chained "$@" || exit $?',
        'printf "%s" "$UNIFLOW_INPUT" | uniflow_hook "$@"',
    ),
    # git's ref lines are read once and fed to both; either one's refusal refuses the push
    SERVER_HOOK: (
        "UNIFLOW_INPUT=$(cat; echo .)",
        "UNIFLOW_INPUT=${UNIFLOW_INPUT%.}",
        'printf "%s" "$UNIFLOW_INPUT" | uniflow_chained "$@" || exit $?',
        'printf "%s" "$UNIFLOW_INPUT" | uniflow_hook "$@"',
    ),
    # the merge is done either way: both run; the first failure is the hook's status
    "post-merge": (
        'uniflow_chained "$@"',
        "UNIFLOW_STATUS=$?",
        '(uniflow_hook "$@") || exit $?',
        'exit "$UNIFLOW_STATUS"',
    ),
}


def _indent(text: str) -> str:
    return "".join(f"    {line}" if line.strip() else line for line in text.splitlines(keepends=True))


def hook_script(name: str, python: str | None = None) -> str:
    """The text of hook ``name``; ``python`` (an interpreter with uniflow) is tried first.

    Nothing from the work tree is ever run: the interpreter starts isolated (``-I``: neither
    the current directory, which is the work-tree root when Git runs a hook, nor
    ``PYTHONPATH`` is on ``sys.path``), and the ``uniflow`` console script (whose
    ``sys.path[0]`` is its own bin directory) is used only from an absolute PATH entry
    outside the work tree, with ``PYTHONPATH`` and ``PYTHONHOME`` unset. The hook kept as
    ``<name>.uniflow-chained`` (if executable) runs first, as Git would have run it.
    """
    if name not in (*HOOK_NAMES, SERVER_HOOK):
        raise UsageError(f"unknown hook {name!r}: expected one of {', '.join((*HOOK_NAMES, SERVER_HOOK))}")
    py_line = _PYTHON_LINE
    if python and os.path.isabs(python) and not any(c in python for c in '"$`\\\n'):
        py_line = f'UNIFLOW_PYTHON="${{UNIFLOW_PYTHON:-{python}}}"'
    server = name == SERVER_HOOK  # the pusher's environment never skips a server's hook
    no_hooks = "" if server else '[ -n "$UNIFLOW_NO_HOOKS" ] && exit 0\n'
    installed_by = (
        "# Installed by `uniflow hooks install --server`; see docs/governance.md. A hook that was\n"
        f"# here before (the server's own, a team's) is kept as {name}{CHAINED_SUFFIX} and runs\n"
        "# first, with the same input; its refusal refuses the push.\n"
        "# Python starts isolated (-I); a `uniflow` program is taken only from an absolute PATH entry.\n"
        if server
        else "# Installed by `uniflow hooks install`; see docs/sharing.md. UNIFLOW_NO_HOOKS=1 skips it.\n"
        f"# A hook that was here before (git-lfs's, say) is kept as {name}{CHAINED_SUFFIX} and\n"
        "# runs first, with the same arguments and input; `uniflow hooks uninstall` puts it back.\n"
        "# Runs nothing from this work tree: Python starts isolated (-I), and a `uniflow`\n"
        "# program is taken only from an absolute PATH entry outside the work tree.\n"
    )
    own = (
        f"{no_hooks}"
        f"{_HOOK_SKIP.get(name, '')}"
        f"{py_line}\n"
        'case "$UNIFLOW_PYTHON" in\n'
        f'    /*) [ -x "$UNIFLOW_PYTHON" ] && exec "$UNIFLOW_PYTHON" -I -m uniflow hooks run {name} "$@" ;;\n'
        "esac\n"
        "unset PYTHONPATH PYTHONHOME\n"
        "UNIFLOW_BIN=$(command -v uniflow 2>/dev/null) || UNIFLOW_BIN=\n"
        'case "$UNIFLOW_BIN" in\n'
        '    "$PWD"/*) ;;\n'
        f'    /*) exec "$UNIFLOW_BIN" hooks run {name} "$@" ;;\n'
        "esac\n"
        f"{_HOOK_FALLBACK[name]}"
    )
    return (
        "#!/bin/sh\n"
        f"{_MARKER}{name}\n"
        f"{_HOOK_DOC[name]}"
        f"{installed_by}"
        "uniflow_hook() {\n"
        f"{_indent(own)}"
        "}\n"
        f'UNIFLOW_CHAINED="$0{CHAINED_SUFFIX}"\n'
        '[ -x "$UNIFLOW_CHAINED" ] || uniflow_hook "$@"\n'
        + "".join(f"{line}\n" for line in (*_HOOK_RUN_CHAINED, *_HOOK_CHAIN[name]))
    )


def hooks_dir(repo: Repository) -> Path:
    """The repository's hooks directory (honours ``core.hooksPath`` and worktrees)."""
    out = run_git(repo.root, "rev-parse", "--git-path", "hooks", timeout=60).stdout.strip()
    path = Path(out)
    return path if path.is_absolute() else repo.root / path


def _isolated_python() -> str:
    """This interpreter, if ``python -I -m uniflow`` finds this uniflow with it; "" when
    uniflow lives in the user site-packages, which ``-I`` hides (the hook then runs the
    ``uniflow`` console script instead)."""
    import site

    package = Path(__file__).resolve().parent
    user_site = site.getusersitepackages() if site.ENABLE_USER_SITE else None
    if user_site and Path(user_site).resolve() in package.parents:
        return ""
    return sys.executable


@dataclass(frozen=True)
class HookResult:
    """What ``hooks install`` / ``hooks uninstall`` did to one hook.

    ``status``: install gives ``installed`` (no hook was there), ``chained`` (the hook that
    was there is kept as ``chained`` and runs first), ``updated`` (an older uniflow hook),
    ``unchanged``, or ``conflict`` (nothing written: see ``detail``); uninstall gives
    ``restored`` (the chained hook is back), ``removed``, ``absent`` (no hook), ``foreign``
    (a hook that is not uniflow's, left alone) or ``conflict``.
    """

    hook: str
    path: str
    status: str
    chained: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)


def _read(path: Path) -> bytes | None:
    """The bytes of the hook at ``path``; None if there is none; b"" for a dangling link."""
    if not os.path.lexists(path):
        return None
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise RepositoryError(f"cannot read {path}: {exc.strerror}") from exc


def _same_file(a: Path, b: Path) -> bool:
    """Same bytes and same permission bits (what "restored exactly" means)."""
    try:
        return a.read_bytes() == b.read_bytes() and a.stat().st_mode == b.stat().st_mode
    except OSError:
        return False


def _keep(path: Path, dest: Path) -> None:
    """Make ``dest`` another name of the hook at ``path`` (a hard link: same bytes, same mode,
    the link itself for a symlink), so the hook slot is never empty; a copy where links fail."""
    try:
        os.link(path, dest, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:
        shutil.copy2(path, dest, follow_symlinks=False)


def _move(src: Path, dest: Path) -> None:
    try:
        os.replace(src, dest)
    except OSError as exc:
        raise RepositoryError(f"cannot move {src} to {dest}: {exc.strerror}") from exc


def _free_name(path: Path) -> Path:
    """``path``, or ``path.1``, ``path.2``... : the first name not taken."""
    candidate, n = path, 0
    while os.path.lexists(candidate):  # bounded by the files in the directory
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


def _write_hook(path: Path, text: str) -> None:
    _replace_file(path, text.encode(), 0o755)


def _replace_file(path: Path, data: bytes, mode: int) -> None:
    """Put a new file holding ``data`` (``mode``, minus the umask) at ``path``: written under a
    name of its own next to it (created, never opened through a symlink), then renamed over
    whatever ``path`` was, so a symlink there is replaced, not written through."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.uniflow-tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:  # bounded: each write makes progress or raises
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise RepositoryError(f"cannot write {path}: {exc.strerror}") from exc


def install_hooks(repo: Repository, *, force: bool = False, python: str | None = None) -> list[HookResult]:
    """Install the uniflow hooks, chaining the hooks already there (see the module doc).

    A hook that is not uniflow's is kept as ``<name>.uniflow-chained`` (status
    ``chained``), and so is the hook an earlier ``hooks install --force`` (which replaced
    hooks) set aside as ``<name>.uniflow-backup``. If ``<name>.uniflow-chained`` already
    holds a different hook (someone replaced uniflow's hook since, e.g. ``git lfs update
    --force``), nothing is written for that hook (status ``conflict``) unless ``force``:
    then the current hook is chained and the older one kept as ``<name>.uniflow-backup``.
    """
    target = hooks_dir(repo)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RepositoryError(f"cannot create {target}: {exc.strerror}") from exc
    py = python if python is not None else _isolated_python()
    return [_install_one(target, name, hook_script(name, py), force) for name in HOOK_NAMES]


def _install_one(target: Path, name: str, text: str, force: bool, file: str | None = None) -> HookResult:
    """Put hook ``name`` (``text``) in ``target`` as ``file`` (default: ``name``): ``installed``
    where there was none, ``unchanged``, ``updated`` (an older uniflow hook), or ``chained``
    (the hook there is kept as ``<file>.uniflow-chained``); ``conflict`` when that name
    holds another hook."""
    file = file or name
    path, chained = target / file, target / f"{file}{CHAINED_SUFFIX}"
    current = _read(path)
    kept = str(chained) if os.path.lexists(chained) else None
    if current is None:
        status = "installed"
    elif current == text.encode():
        return HookResult(name, str(path), "unchanged", kept)
    elif f"{_MARKER}{name}".encode() in current:
        status, kept = _update_own(target, file, chained, kept)
    else:
        detail = _chain_foreign(target, file, path, chained, kept, force)
        if detail is not None:
            return HookResult(name, str(path), "conflict", kept, detail)
        status, kept = "chained", str(chained)
    _write_hook(path, text)
    return HookResult(name, str(path), status, kept)


def _update_own(target: Path, name: str, chained: Path, kept: str | None) -> tuple[str, str | None]:
    """``(status, chained hook)`` of replacing an older uniflow hook: a hook an earlier
    ``hooks install --force`` set aside as ``<name>.uniflow-backup`` is chained again."""
    backup = target / f"{name}{BACKUP_SUFFIX}"
    if kept is None and os.path.lexists(backup):
        _move(backup, chained)
        return "chained", str(chained)
    return "updated", kept


def _chain_foreign(
    target: Path, name: str, path: Path, chained: Path, kept: str | None, force: bool
) -> str | None:
    """Keep the hook at ``path`` (not uniflow's) as ``chained``. When ``chained`` already
    holds another hook: with ``force`` that one is kept as ``<name>.uniflow-backup``,
    else nothing moves and the conflict's explanation is returned."""
    try:
        if kept is not None and not _same_file(path, chained):
            if not force:
                return (
                    f"{chained} already holds the hook uniflow chains to, and {path} is another "
                    f"one: merge them into {chained.name} (or use --force to chain {name} and "
                    f"keep the older one as {name}{BACKUP_SUFFIX})"
                )
            os.replace(chained, _free_name(target / f"{name}{BACKUP_SUFFIX}"))
            kept = None
        if kept is None:
            _keep(path, chained)
    except OSError as exc:
        raise RepositoryError(f"cannot keep {path} as {chained}: {exc.strerror}") from exc
    return None


def install_server_hook(
    bare: Path,
    *,
    force: bool = False,
    python: str | None = None,
    trust_root: Path | None = None,
    into: Path | None = None,
) -> HookResult:
    """Install the ``pre-receive`` hook for the bare repository ``bare``.

    Where: ``into`` (a directory whose hooks all run, such as GitLab's
    ``custom_hooks/pre-receive.d``), as ``into/uniflow``; else, when ``bare``'s hooks
    directory (or ``core.hooksPath``) has a ``pre-receive.d`` (Gitea's layout: its own
    ``pre-receive`` runs every hook there, and is rewritten when Gitea resynchronizes its
    hooks), as ``pre-receive.d/uniflow``; else as the ``pre-receive`` hook itself, chaining
    the one already there as the client hooks do. ``trust_root`` (an allowed-signers file
    naming the admins) is copied into the repository as the pinned root the hook verifies
    the policy chain from (see :mod:`uniflow._ops.incoming`); without it the first policy the
    repository holds is."""
    from .._records.policyfiles import server_trust_root_path

    root = Path(bare).resolve()
    if not (root / "HEAD").is_file() or not (root / "objects").is_dir():
        raise UsageError(f"--server {bare}: not a bare Git repository (no HEAD and objects/ in it)")
    target, file = _server_hook_place(root, into)
    try:
        target.mkdir(parents=True, exist_ok=True)
        if trust_root is not None:
            pinned = server_trust_root_path(root)
            pinned.parent.mkdir(parents=True, exist_ok=True)
            _replace_file(pinned, Path(trust_root).read_bytes(), 0o644)
    except OSError as exc:
        raise RepositoryError(f"cannot install the server hook in {target}: {exc.strerror}") from exc
    py = python if python is not None else _isolated_python()
    return _install_one(target, SERVER_HOOK, hook_script(SERVER_HOOK, py), force, file)


def _server_hook_place(root: Path, into: Path | None) -> tuple[Path, str]:
    """``(directory, file name)`` of the server hook of the bare repository ``root`` (see
    :func:`install_server_hook`)."""
    if into is not None:
        return Path(into).absolute(), SERVER_HOOK_FILE
    out = run_git(root, "rev-parse", "--git-path", "hooks", timeout=60).stdout.strip()
    hooks = Path(out) if os.path.isabs(out) else root / out
    several = hooks / f"{SERVER_HOOK}.d"
    if several.is_dir() and not several.is_symlink():
        return several, SERVER_HOOK_FILE
    return hooks, SERVER_HOOK


def uninstall_hooks(repo: Repository) -> list[HookResult]:
    """Remove the uniflow hooks; a hook uniflow chained to is moved back into place, exactly
    as it was (bytes, mode: it is the same file). A hook that is not uniflow's is left alone."""
    target = hooks_dir(repo)
    out = []
    for name in HOOK_NAMES:
        path, chained = target / name, target / f"{name}{CHAINED_SUFFIX}"
        current = _read(path)
        has_chained = os.path.lexists(chained)
        ours = current is not None and f"{_MARKER}{name}".encode() in current
        try:
            if current is not None and not ours:
                status, detail = "foreign", f"{path} is not uniflow's hook; left alone"
                if has_chained:
                    status = "conflict"
                    detail = f"{path} is not uniflow's hook, and {chained} is there too: merge them by hand"
                out.append(HookResult(name, str(path), status, str(chained) if has_chained else None, detail))
                continue
            if has_chained:
                os.replace(chained, path)
                out.append(HookResult(name, str(path), "restored"))
            elif current is not None:
                path.unlink()
                out.append(HookResult(name, str(path), "removed"))
            else:
                out.append(HookResult(name, str(path), "absent"))
        except OSError as exc:
            raise RepositoryError(f"cannot restore {path}: {exc.strerror}") from exc
    return out


# ---------------------------------------------------------------------- plain git fetch
#: added to ``remote.<origin>.fetch`` so that a plain ``git fetch`` / ``git pull`` brings the
#: lifecycles. Never forced (no "+"): git refuses a lifecycle that does not fast-forward (a
#: remote rewinding it, or events of ours not pushed yet) and ``uniflow pull`` integrates it,
#: validated. Stage pointers are derived from the lifecycle and are not fetched.
FETCH_REFSPEC = f"{LIFECYCLE_PREFIX}/*:{LIFECYCLE_PREFIX}/*"


@dataclass(frozen=True)
class FetchConfig:
    """What :func:`configure_fetch` did to Git remote ``remote``: ``refspec`` (added now),
    ``tags`` (``tagOpt = --tags`` set now), ``prune`` (the refspec was withheld because
    fetches of this remote prune: it would delete lifecycles never pushed)."""

    remote: str
    refspec: bool = False
    tags: bool = False
    prune: bool = False


def _git_config(root: Path, *args: str) -> str:
    return run_git(root, "config", *args, check=False, timeout=60).stdout.strip()


def configure_fetch(root: Path) -> FetchConfig | None:
    """Make a plain ``git fetch`` of ``origin`` (else of the only Git remote) bring the
    registry: :data:`FETCH_REFSPEC` for lifecycles, added once, and ``tagOpt = --tags`` for
    version tags, unless the user set a ``tagOpt``. Tags come by ``--tags`` rather than a
    ``refs/tags/models/*`` refspec because ``git fetch --prune`` deletes local refs that a
    configured refspec maps and the remote lacks (versions not pushed yet); tags fetched by
    ``--tags`` are never pruned. For the same reason the lifecycle refspec is not added when
    fetches of the remote prune (``remote.<name>.prune``, else ``fetch.prune``). None when
    there is no such remote. Other remotes are left alone: two remotes fetched into the same
    local refs would fight."""
    remotes = git_remotes(root)
    remote = "origin" if "origin" in remotes else remotes[0] if len(remotes) == 1 else None
    if remote is None:
        return None
    key = f"remote.{remote}.fetch"
    have = run_git(root, "config", "--get-all", key, check=False, timeout=60).stdout.splitlines()
    prune = _git_config(root, "--bool", f"remote.{remote}.prune") or _git_config(
        root, "--bool", "fetch.prune"
    )
    refspec = tags = False
    if FETCH_REFSPEC not in have and prune != "true":
        run_git(root, "config", "--add", key, FETCH_REFSPEC, timeout=60, what=f"git config --add {key}")
        refspec = True
    if not _git_config(root, f"remote.{remote}.tagOpt"):
        run_git(root, "config", f"remote.{remote}.tagOpt", "--tags", timeout=60, what="git config tagOpt")
        tags = True
    return FetchConfig(remote, refspec, tags, prune == "true" and FETCH_REFSPEC not in have)


def run_pre_push(
    repo: Repository,
    git_remote: str,
    lines: Iterable[str],
    *,
    jobs: int = JOBS,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """The pre-push hook: upload the chunks of every model version being pushed.

    ``lines`` are what git gives pre-push on stdin: ``<local ref> <local sha> <remote ref>
    <remote sha>``. Version tags (and stage pointers, which point at version tags) are
    resolved to manifests; their chunks go to the blob remote named like ``git_remote``.
    """
    versions: list[tuple[str, str]] = []
    for line in lines:
        parts = line.split()
        if len(parts) != 4 or parts[1] == ZERO:
            continue
        local_ref, sha = parts[0], parts[1]
        if not local_ref.startswith((f"{TAGS_PREFIX}/", f"{STAGES_PREFIX}/", f"{EVENT_TAGS_PREFIX}/")):
            continue
        try:
            tag = repo.git.read_tag(sha)
        except (KeyError, RepositoryError):  # not an annotated tag: not a version
            continue
        parsed = parse_tag_name(tag.name.decode(errors="replace")) or event_tag_version(
            tag
        )  # an event tag: its version
        if parsed is not None:
            versions.append(parsed)
    wanted = list(dict.fromkeys(versions))
    stats = TransferStats()
    if wanted:
        spec_name = git_remote if git_remote in git_remotes(repo.root) else None
        blob_remote = blob_remote_for(repo, None, spec_name)
        if blob_remote is None:
            raise no_blob_remote(git_remote)
        stats = upload_versions(repo, blob_remote, wanted, jobs=jobs, progress=progress)
    return {"versions": [f"{m}/{v}" for m, v in wanted], "chunks": stats.to_dict()}


def run_post_merge(repo: Repository, check: PolicyCheck | None = None) -> PullReport:
    """What the post-merge hook does: fetch registry refs from the current branch's remote
    (``check``: the policy check pull applies, when a policy is in force)."""
    remote = None
    branch = repo.git.branch()
    if branch:
        proc = run_git(repo.root, "config", "--get", f"branch.{branch}.remote", check=False, timeout=60)
        name = proc.stdout.strip()
        if proc.returncode == 0 and name and name != "." and name in git_remotes(repo.root):
            remote = name
    return pull(repo, remote, fetch_chunks=False, check=check)
