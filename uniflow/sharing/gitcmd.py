"""The ``git`` binary, for everything that crosses the network: ``ls-remote``, ``fetch``,
``push``, and the names of the repository's Git remotes.

Refs travel with the ``git`` binary rather than dulwich's client: it speaks every transport
and credential helper the user has configured (see docs/sharing.md). Every call is bounded
in time, runs with ``LC_ALL=C`` and no terminal prompt, and a failure is a one-line
:class:`RemoteError` carrying git's last error line. A transfer over HTTP(S) that stalls
(under 1 byte/s for :data:`GIT_STALL_TIMEOUT` seconds: ``GIT_HTTP_LOW_SPEED_LIMIT``/``TIME``,
unless the environment sets them) is abandoned by git itself, long before ``GIT_TIMEOUT``.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

from .._errors import RemoteError, UsageError
from .._records.refs import LIFECYCLE_PREFIX, REGISTRY_PATTERNS, TAGS_PREFIX, tags_prefix, tracking_prefix
from .blobs import validate_remote_name

__all__ = [
    "GIT_STALL_TIMEOUT",
    "GIT_TIMEOUT",
    "IN_PUSH_ENV",
    "REPO_ENV_VARS",
    "SAFE_CONFIG",
    "STALL_TIMEOUT_ENV",
    "ZERO",
    "config_env",
    "fetch_refs",
    "git_remotes",
    "last_error",
    "ls_remote",
    "resolve_git_remote",
    "run_git",
    "split_remote_and_names",
]

#: seconds any one git network command may take
GIT_TIMEOUT = 900.0
#: seconds a git transfer over HTTP(S) may move less than a byte per second before git gives up
GIT_STALL_TIMEOUT = 60
#: environment override of :data:`GIT_STALL_TIMEOUT` (whole seconds, e.g. shorter in CI)
STALL_TIMEOUT_ENV = "UNIFLOW_GIT_STALL_TIMEOUT"
ZERO = "0" * 40
#: set while ``uniflow push`` runs ``git push``: the pre-push hook then does nothing
IN_PUSH_ENV = "UNIFLOW_IN_PUSH"
#: variables that point git at another repository, object store, index or history (what
#: ``git rev-parse --local-env-vars`` lists, and the namespace/quarantine ones): a git run in a
#: repository uniflow keeps itself inherits none of them (a hook's environment has several)
REPO_ENV_VARS = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_IMPLICIT_WORK_TREE",
        "GIT_COMMON_DIR",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_GRAFT_FILE",
        "GIT_SHALLOW_FILE",
        "GIT_REPLACE_REF_BASE",
        "GIT_NO_REPLACE_OBJECTS",
        "GIT_NAMESPACE",
        "GIT_QUARANTINE_PATH",
        "GIT_PREFIX",
        "GIT_INTERNAL_SUPER_PREFIX",
        "GIT_CONFIG",
    }
)
#: settings before every git run in a repository uniflow keeps itself: no hook, no fsmonitor,
#: no ``ext::`` transport, no replace objects, whatever a config file says
SAFE_CONFIG = (
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "core.fsmonitor=false",
    "-c",
    "protocol.ext.allow=never",
    "-c",
    "core.useReplaceRefs=false",
)


# ---------------------------------------------------------------------- git binary
def run_git(
    root: os.PathLike[str] | str,
    *args: str,
    env: dict[str, str] | None = None,
    timeout: float = GIT_TIMEOUT,
    check: bool = True,
    what: str | None = None,
    input: str | None = None,
    isolated: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``git`` in ``root``; a failure becomes :class:`RemoteError` with git's last error line.
    ``input`` is written to git's standard input (else it reads nothing). ``isolated``: for a
    repository uniflow keeps itself (a mirror), without the variables that would point git at
    another repository (:data:`REPO_ENV_VARS`) and with :data:`SAFE_CONFIG` before ``args``."""
    inherited = {k: v for k, v in os.environ.items() if not (isolated and k in REPO_ENV_VARS)}
    full_env = {**inherited, "LC_ALL": "C", "LANGUAGE": "C", **(env or {})}
    if isolated:
        args = (*SAFE_CONFIG, *args)
    full_env.setdefault("GIT_TERMINAL_PROMPT", "0")
    full_env.setdefault("GIT_HTTP_LOW_SPEED_LIMIT", "1")  # bytes/s; a server that never answers
    full_env.setdefault("GIT_HTTP_LOW_SPEED_TIME", str(_stall_timeout()))  # fails in bounded time
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=root,
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=subprocess.DEVNULL if input is None else None,
            check=False,
        )
    except FileNotFoundError as exc:
        raise RemoteError("the git executable was not found on PATH") from exc
    except subprocess.TimeoutExpired as exc:
        raise RemoteError(f"{what or 'git ' + args[0]} timed out after {timeout:.0f}s") from exc
    if check and proc.returncode != 0:
        raise RemoteError(f"{what or 'git ' + args[0]} failed: {last_error(proc.stderr)}")
    return proc


def config_env(settings: dict[str, str]) -> dict[str, str]:
    """``settings`` as command-line scope config in the environment (``GIT_CONFIG_COUNT``,
    ``GIT_CONFIG_KEY_n``/``VALUE_n``), after any the caller's environment already sets: a
    value (a URL with a token, a command) is then in no file and in no argument list."""
    try:
        start = max(0, int(os.environ.get("GIT_CONFIG_COUNT", "0") or "0"))
    except ValueError:
        start = 0
    out: dict[str, str] = {}
    for i, (key, value) in enumerate(settings.items(), start):
        out[f"GIT_CONFIG_KEY_{i}"], out[f"GIT_CONFIG_VALUE_{i}"] = key, value
    out["GIT_CONFIG_COUNT"] = str(start + len(settings))
    return out


def _stall_timeout() -> int:
    """:data:`STALL_TIMEOUT_ENV` when set (a whole number of seconds), else :data:`GIT_STALL_TIMEOUT`."""
    raw = os.environ.get(STALL_TIMEOUT_ENV, "").strip()
    if not raw:
        return GIT_STALL_TIMEOUT
    if not raw.isdigit() or not 0 < int(raw) <= GIT_TIMEOUT:
        raise UsageError(f"{STALL_TIMEOUT_ENV}={raw!r}: must be a whole number of seconds above 0")
    return int(raw)


def last_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.lower().startswith(("fatal:", "error:"))]
    return (errors or lines or ["(no message)"])[-1]


def git_remotes(root: Path) -> list[str]:
    return run_git(root, "remote").stdout.split()


def resolve_git_remote(root: Path, remote: str | None) -> str:
    """The Git remote to use: ``remote``, else ``origin``, else the only one."""
    remotes = git_remotes(root)
    if remote is not None:
        validate_remote_name(remote)
        if remote not in remotes:
            raise RemoteError(f"no git remote named {remote!r} (add it with `git remote add {remote} URL`)")
        return remote
    if "origin" in remotes:
        return "origin"
    if len(remotes) == 1:
        return remotes[0]
    if not remotes:
        raise RemoteError("this repository has no git remote (add one with `git remote add origin URL`)")
    raise RemoteError(
        f"several git remotes ({', '.join(remotes)}) and none named origin: name the one to use"
    )


def split_remote_and_names(root: Path, args: Iterable[str]) -> tuple[str | None, list[str]]:
    """``[REMOTE] [NAME...]``: the first word is a remote when a Git remote has that name."""
    words = list(args)
    if words and words[0] in git_remotes(root):
        return words[0], words[1:]
    return None, words


def ls_remote(root: Path, remote: str) -> dict[str, str]:
    """``{ref: sha}`` of the registry refs a Git remote has (one round trip)."""
    out = run_git(
        root,
        "ls-remote",
        "--refs",
        remote,
        *REGISTRY_PATTERNS,
        what=f"listing refs of git remote {remote!r}",
    ).stdout
    refs: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if len(sha) == 40 and name.startswith(tuple(p[:-1] for p in REGISTRY_PATTERNS)):
            refs[name] = sha
    return refs


def fetch_refs(root: Path, remote: str, names: list[str] | None, *, tags: bool, force_tags: bool) -> None:
    """Fetch the remote's lifecycles (into its tracking refs) and, with ``tags``, version tags."""
    specs = [f"+{LIFECYCLE_PREFIX}/*:{tracking_prefix(remote)}/*"]
    if tags:
        plus = "+" if force_tags else ""
        if names:
            specs += [f"{plus}{tags_prefix(n)}/*:{tags_prefix(n)}/*" for n in names]
        else:
            specs.append(f"{plus}{TAGS_PREFIX}/*:{TAGS_PREFIX}/*")
    proc = run_git(
        root,
        "fetch",
        "--no-tags",
        "--no-prune",
        "--no-recurse-submodules",
        "--no-write-fetch-head",
        # an empty refmap: the user's configured refspecs (`uniflow init` adds one for
        # refs/uniflow/models/*, fast-forward only) must not also move refs of this fetch
        "--refmap=",
        remote,
        *specs,
        check=False,
    )
    if proc.returncode != 0:
        clobber = [ln for ln in proc.stderr.splitlines() if "would clobber existing tag" in ln]
        if clobber:
            tags_hit = sorted({w for ln in clobber for w in ln.split() if w.startswith("models/")})
            raise RemoteError(
                f"version tags differ between this clone and {remote!r}: {', '.join(tags_hit[:5])}; "
                f"a version was "
                "registered twice with the same number — rename yours (register it under a new version), "
                "delete the local tag, then pull again"
            )
        raise RemoteError(f"git fetch from {remote!r} failed: {last_error(proc.stderr)}")
