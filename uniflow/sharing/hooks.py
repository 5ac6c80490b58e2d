"""The Git hooks that keep bytes and refs in step: ``pre-push`` uploads the chunks of every
model tag being pushed before git sends it; ``post-merge`` fetches the registry refs after
``git pull``.

Both are tiny shell stubs calling ``uniflow hooks run NAME`` with an isolated interpreter
(``python -I``), or the ``uniflow`` console script from an absolute PATH entry outside the
work tree, so no module committed to the work tree can shadow uniflow or its dependencies.
:func:`install_hooks` copies them into the repository's hooks directory without clobbering
someone else's hook.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._errors import RepositoryError, UsageError
from .blobs import JOBS, TransferStats
from .gitcmd import ZERO, git_remotes, run_git
from .pull import PullReport, pull
from .push import blob_remote_for, no_blob_remote, upload_versions

if TYPE_CHECKING:  # pragma: no cover
    from .._repo import Repository

__all__ = ["HOOK_NAMES", "hook_script", "hooks_dir", "install_hooks", "run_post_merge", "run_pre_push"]

log = logging.getLogger("uniflow.hooks")
ProgressFn = Callable[[int, int], None]


# ---------------------------------------------------------------------- hooks
HOOK_NAMES = ("pre-push", "post-merge")
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
}
_HOOK_SKIP = {"pre-push": '[ -n "$UNIFLOW_IN_PUSH" ] && exit 0   # `uniflow push` uploads the bytes itself\n'}
_HOOK_FALLBACK = {
    "pre-push": (
        "if grep -q -e refs/tags/models/ -e refs/uniflow/; then\n"
        '    echo "uniflow pre-push: uniflow is not installed, cannot upload model bytes; push refused" >&2\n'
        "    exit 1\n"
        "fi\n"
        "exit 0\n"
    ),
    "post-merge": 'echo "uniflow post-merge: uniflow is not installed; registry refs not fetched" '
    ">&2\nexit 0\n",
}


def hook_script(name: str, python: str | None = None) -> str:
    """The text of hook ``name``; ``python`` (an interpreter with uniflow) is tried first.

    Nothing from the work tree is ever run: the interpreter starts isolated (``-I``: neither
    the current directory, which is the work-tree root when Git runs a hook, nor
    ``PYTHONPATH`` is on ``sys.path``), and the ``uniflow`` console script (whose
    ``sys.path[0]`` is its own bin directory) is used only from an absolute PATH entry
    outside the work tree, with ``PYTHONPATH`` and ``PYTHONHOME`` unset.
    """
    if name not in HOOK_NAMES:
        raise UsageError(f"unknown hook {name!r}: expected one of {', '.join(HOOK_NAMES)}")
    py_line = _PYTHON_LINE
    if python and os.path.isabs(python) and not any(c in python for c in '"$`\\\n'):
        py_line = f'UNIFLOW_PYTHON="${{UNIFLOW_PYTHON:-{python}}}"'
    return (
        "#!/bin/sh\n"
        f"{_MARKER}{name}\n"
        f"{_HOOK_DOC[name]}"
        "# Installed by `uniflow hooks install`; see docs/sharing.md. UNIFLOW_NO_HOOKS=1 skips it.\n"
        "# Runs nothing from this work tree: Python starts isolated (-I), and a `uniflow`\n"
        "# program is taken only from an absolute PATH entry outside the work tree.\n"
        '[ -n "$UNIFLOW_NO_HOOKS" ] && exit 0\n'
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


def install_hooks(
    repo: Repository, *, force: bool = False, python: str | None = None
) -> list[dict[str, str]]:
    """Install the uniflow hooks; ``[{hook, path, status}]``.

    Status: ``installed``, ``updated`` (an older uniflow hook), ``unchanged``, ``kept`` (a
    different hook exists and ``force`` is false) or ``replaced`` (``force``: the old hook is
    kept as ``<name>.uniflow-backup``).
    """
    target = hooks_dir(repo)
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RepositoryError(f"cannot create {target}: {exc.strerror}") from exc
    py = python if python is not None else _isolated_python()
    out = []
    for name in HOOK_NAMES:
        text = hook_script(name, py)
        path = target / name
        status = "installed"
        if path.exists():
            try:
                old = path.read_text(errors="replace")
            except OSError as exc:
                raise RepositoryError(f"cannot read {path}: {exc.strerror}") from exc
            if old == text:
                status = "unchanged"
            elif f"{_MARKER}{name}" in old:
                status = "updated"
            elif not force:
                out.append({"hook": name, "path": str(path), "status": "kept"})
                continue
            else:
                status = "replaced"
                os.replace(path, path.with_name(f"{name}.uniflow-backup"))
        if status != "unchanged":
            tmp = path.with_name(f".{name}.uniflow-tmp")
            try:
                tmp.write_text(text)
                tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | stat.S_IRUSR)
                os.replace(tmp, path)
            except OSError as exc:
                raise RepositoryError(f"cannot write {path}: {exc.strerror}") from exc
        out.append({"hook": name, "path": str(path), "status": status})
    return out


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
        if not local_ref.startswith(("refs/tags/models/", "refs/uniflow/stages/")):
            continue
        try:
            tag = repo.git.read_tag(sha)
        except (KeyError, RepositoryError):  # not an annotated tag: not a version
            continue
        name = tag.name.decode(errors="replace")
        if not name.startswith("models/") or name.count("/") != 2:
            continue
        _, model, version = name.split("/")
        versions.append((model, version))
    wanted = list(dict.fromkeys(versions))
    stats = TransferStats()
    if wanted:
        spec_name = git_remote if git_remote in git_remotes(repo.root) else None
        blob_remote = blob_remote_for(repo, None, spec_name)
        if blob_remote is None:
            raise no_blob_remote(git_remote)
        stats = upload_versions(repo, blob_remote, wanted, jobs=jobs, progress=progress)
    return {"versions": [f"{m}/{v}" for m, v in wanted], "chunks": stats.to_dict()}


def run_post_merge(repo: Repository) -> PullReport:
    """What the post-merge hook does: fetch registry refs from the current branch's remote."""
    remote = None
    branch = repo.git.branch()
    if branch:
        proc = run_git(repo.root, "config", "--get", f"branch.{branch}.remote", check=False, timeout=60)
        name = proc.stdout.strip()
        if proc.returncode == 0 and name and name != "." and name in git_remotes(repo.root):
            remote = name
    return pull(repo, remote, fetch_chunks=False)
