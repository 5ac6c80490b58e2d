"""The per-user mirror of a Git URL: the registry's refs and the few blobs reads need, no code.

One bare repository per URL under ``<cache>/mirrors/<stem>-<hash>.git`` (``<cache>`` is
``$UNIFLOW_CACHE_DIR``, else ``$XDG_CACHE_HOME/uniflow``, else ``~/.cache/uniflow``). Every
call goes through the ``git`` binary (``gitcmd.run_git``), then the mirror is read through
:class:`~uniflow._git.GitRepo` like any repository, behind the usual validation gate.

A sync (docs/remote.md, "How little is fetched"):

1. ``git ls-remote --symref origin HEAD refs/tags/models/* refs/uniflow/models/* refs/uniflow/stages/*``,
   one round trip. If the answer equals the state recorded after the last complete sync
   (``uniflow-mirror.json``), nothing else happens.
2. Otherwise, a partial, shallow fetch of the version tags, stage pointers and the default
   branch's head: ``--filter=blob:none --depth=1`` brings each tag, its version commit and
   trees, but no blob and no code history; then the lifecycle refs with ``--filter=blob:none``
   (their commits have no code parent).
3. One more fetch of exactly the blobs reads need, by id, in one request (``--stdin``): each
   new version's ``.uniflow/card/manifest.msgpack``, every lifecycle's ``event.json`` and its
   head's ``state.json``, and ``.uniflow/config.toml`` of the default branch.
4. The state is recorded (write + rename) only once all of that is present.

A server that does not allow filters (``uploadpack.allowFilter``) is refused before any
fetch: git would silently ignore the filter and download the code. For a repository on
this machine (a path or ``file://``) the mirror asks git's own ``upload-pack`` to allow them.
Concurrent syncs of one URL are serialised by a lock file; ``offline`` reads the recorded
state without any network.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .._errors import ConcurrencyError, RemoteError, RepositoryError
from .._git import GitRepo
from .._refs import LIFECYCLE_PREFIX, REGISTRY_PATTERNS, STAGES_PREFIX, TAGS_PREFIX
from .gitcmd import GIT_TIMEOUT, last_error, run_git
from .giturl import GitUrl

__all__ = ["CONFIG_PATH", "HEAD_REF", "Mirror", "MirrorState", "STATE_FILE"]

STATE_FILE = "uniflow-mirror.json"
STATE_FORMAT = 1
#: where the default branch's head is kept in the mirror (outside every registry prefix)
HEAD_REF = "refs/mirror/head"
CONFIG_PATH = ".uniflow/config.toml"
MANIFEST_PARTS = (".uniflow", "card", "manifest.msgpack")
#: how long a sync waits for another process syncing the same URL (seconds)
LOCK_TIMEOUT = GIT_TIMEOUT + 60
#: git's own upload-pack for a repository on this machine, allowed to filter and to send by id
LOCAL_UPLOAD_PACK = "git -c uploadpack.allowFilter=true -c uploadpack.allowAnySHA1InWant=true upload-pack"
_SHA = re.compile(r"[0-9a-f]{40}")
_PREFIXES = (TAGS_PREFIX + "/", LIFECYCLE_PREFIX + "/", STAGES_PREFIX + "/")
_TREE, _FILE_MASK, _FILE = 0o040000, 0o170000, 0o100000
_MAX_CHAIN = 1_000_000


@dataclass(frozen=True)
class MirrorState:
    """What the last complete sync saw: the registry refs, the default branch's head and the
    blob of its ``.uniflow/config.toml``."""

    refs: dict[str, str] = field(default_factory=dict)
    head: str | None = None
    config_blob: str | None = None
    synced_at: float = 0.0
    #: True when this call fetched (False: nothing changed, or offline)
    fetched: bool = False


class Mirror:
    """The bare mirror of one Git URL inside the per-user cache ``home``."""

    def __init__(self, url: GitUrl, home: Path) -> None:
        self.url = url
        self.parent = home / "mirrors"
        self.dir = self.parent / f"{url.key}.git"
        self.lock_path = self.parent / f"{url.key}.lock"
        self.state_path = self.dir / STATE_FILE

    # ------------------------------------------------------------------ public
    def sync(self, *, offline: bool = False) -> MirrorState:
        """Bring the mirror up to date (one ``ls-remote`` when nothing changed) and return
        its state; ``offline`` returns the recorded state without touching the network."""
        if offline:
            state = self._load_state()
            if state is None:
                raise RemoteError(
                    f"{self.url.display} was never fetched into the cache ({self.dir}); "
                    "run once without --offline (offline=True)"
                )
            return state
        with self._locked():
            self._ensure_repo()
            old = self._load_state()
            refs, head, filters = self._ls_remote()
            if old is not None and old.refs == refs and old.head == head:
                return old
            if not filters:
                raise RemoteError(
                    f"the Git server of {self.url.display} does not allow partial fetches "
                    "(uploadpack.allowFilter), and uniflow never downloads a repository's code to reach a "
                    "model; enable the filter on the server, or clone the repository and use "
                    "`uniflow --repo CLONE` (ModelRegistry(CLONE))"
                )
            self._fetch_refs(old, refs, head)
            config_blob = self._fetch_blobs(old, refs, head)
            state = MirrorState(dict(refs), head, config_blob, time.time(), fetched=True)
            self._save_state(state)
            return state

    def git(self) -> GitRepo:
        """The mirror opened for reading (dulwich, lazily)."""
        return GitRepo(self.dir, bare=True)

    # ------------------------------------------------------------------ git
    def _git(self, *args: str, what: str, input: str | None = None, check: bool = True) -> str:
        env = {"GIT_DIR": str(self.dir), "GIT_NO_LAZY_FETCH": "1"}
        proc = run_git(
            self.parent, "-c", "protocol.version=2", *args, env=env, what=what, input=input, check=check
        )
        return proc.stdout

    def _ensure_repo(self) -> None:
        """Create the bare mirror (once, atomically: built aside, then renamed into place)."""
        if (self.dir / "HEAD").is_file():
            return
        try:
            self.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise RepositoryError(f"cannot create the cache directory {self.parent}: {exc.strerror}") from exc
        tmp = self.parent / f".new-{self.url.key}.{uuid.uuid4().hex}"
        try:
            run_git(
                self.parent,
                "init",
                "-q",
                "--bare",
                str(tmp),
                what="creating the mirror",
                env={"GIT_DIR": str(tmp)},
            )
            settings = {
                "remote.origin.url": self.url.raw,
                "remote.origin.promisor": "true",
                "remote.origin.partialclonefilter": "blob:none",
                "gc.auto": "0",
                "core.logAllRefUpdates": "false",
            }
            if self.url.is_local:
                settings["remote.origin.uploadpack"] = LOCAL_UPLOAD_PACK
            for key, value in settings.items():
                run_git(
                    self.parent,
                    "config",
                    key,
                    value,
                    env={"GIT_DIR": str(tmp)},
                    what="configuring the mirror",
                )
            try:
                os.rename(tmp, self.dir)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
        except OSError as exc:
            raise RepositoryError(f"cannot create the mirror {self.dir}: {exc.strerror}") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _ls_remote(self) -> tuple[dict[str, str], str | None, bool]:
        """``(registry refs, HEAD, the server allows filters)``, in one round trip."""
        trace = self.dir / "uniflow-ls-remote.trace"
        with contextlib.suppress(FileNotFoundError):
            trace.unlink()
        env = {"GIT_DIR": str(self.dir)}
        if not self.url.is_local:
            env["GIT_TRACE_PACKET"] = str(trace)  # the capabilities come first in it
        proc = run_git(
            self.parent,
            "-c",
            "protocol.version=2",
            "ls-remote",
            "--symref",
            "origin",
            "HEAD",
            *REGISTRY_PATTERNS,
            env=env,
            check=False,
        )
        if proc.returncode != 0:
            raise RemoteError(f"cannot read the Git repository {self.url.display}: {last_error(proc.stderr)}")
        refs: dict[str, str] = {}
        head = None
        for line in proc.stdout.splitlines():
            sha, _, name = line.partition("\t")
            if not _SHA.fullmatch(sha):
                continue  # "ref: refs/heads/main\tHEAD"
            if name == "HEAD":
                head = sha
            elif name.startswith(_PREFIXES) and not name.endswith("^{}"):
                refs[name] = sha
        filters = self.url.is_local or _allows_filter(trace)
        with contextlib.suppress(FileNotFoundError):
            trace.unlink()
        return refs, head, filters

    def _fetch_refs(self, old: MirrorState | None, refs: dict[str, str], head: str | None) -> None:
        before = old.refs if old is not None else {}

        def changed(*prefixes: str) -> bool:
            mine = {k: v for k, v in refs.items() if k.startswith(prefixes)}
            theirs = {k: v for k, v in before.items() if k.startswith(prefixes)}
            return mine != theirs

        base = [
            "fetch",
            "--no-tags",
            "--prune",
            "--no-recurse-submodules",
            "--no-write-fetch-head",
            "--quiet",
            "--filter=blob:none",
        ]
        if old is None or changed(TAGS_PREFIX + "/", STAGES_PREFIX + "/") or head != old.head:
            specs = [f"+{TAGS_PREFIX}/*:{TAGS_PREFIX}/*", f"+{STAGES_PREFIX}/*:{STAGES_PREFIX}/*"]
            if head is not None:
                specs.append(f"+HEAD:{HEAD_REF}")
            # --depth=1: a version commit's parent is a code commit; its history is not needed
            self._git(
                *base, "--depth=1", "origin", *specs, what=f"fetching the version tags of {self.url.display}"
            )
        if old is None or changed(LIFECYCLE_PREFIX + "/"):
            self._git(
                *base,
                "origin",
                f"+{LIFECYCLE_PREFIX}/*:{LIFECYCLE_PREFIX}/*",
                what=f"fetching the lifecycles of {self.url.display}",
            )

    def _fetch_blobs(self, old: MirrorState | None, refs: dict[str, str], head: str | None) -> str | None:
        """Fetch, in one request, the blobs reads need that the mirror lacks; returns the
        blob id of the default branch's ``.uniflow/config.toml`` (None: there is none)."""
        before = old.refs if old is not None else {}
        git = self.git()
        try:
            wanted: list[str] = []
            for name, sha in refs.items():
                if before.get(name) == sha:
                    continue  # complete since the last sync
                if name.startswith(TAGS_PREFIX + "/"):
                    wanted += _manifest_blob(git, sha)
                elif name.startswith(LIFECYCLE_PREFIX + "/"):
                    wanted += _lifecycle_blobs(git, sha)
            config_blob = _blob_at(git, _commit_tree(git, head), CONFIG_PATH.split("/")) if head else None
            if config_blob:
                wanted.append(config_blob)
            missing = [b for b in dict.fromkeys(wanted) if not git.has_object(b)]
        finally:
            git.close()
        if missing:
            self._git(
                "-c",
                "fetch.negotiationAlgorithm=noop",
                "fetch",
                "--no-tags",
                "--no-recurse-submodules",
                "--no-write-fetch-head",
                "--quiet",
                "--filter=blob:none",
                "--stdin",
                "origin",
                input="\n".join(missing) + "\n",
                what=f"fetching registry records of {self.url.display}",
            )
            git = self.git()
            try:
                still = [b for b in missing if not git.has_object(b)]
            finally:
                git.close()
            if still:
                raise RemoteError(
                    f"the Git server of {self.url.display} did not send {len(still)} registry record(s) "
                    f"(first: {still[0][:12]}); it must allow fetching objects by id (protocol v2, or "
                    "uploadpack.allowReachableSHA1InWant)"
                )
        return config_blob

    # ------------------------------------------------------------------ state
    def _load_state(self) -> MirrorState | None:
        try:
            raw = json.loads(self.state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(raw, dict) or raw.get("format") != STATE_FORMAT:
            return None
        refs = raw.get("refs")
        head, blob, when = raw.get("head"), raw.get("config_blob"), raw.get("synced_at")
        if not isinstance(refs, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and _SHA.fullmatch(v) for k, v in refs.items()
        ):
            return None
        if not all(x is None or isinstance(x, str) and _SHA.fullmatch(x) for x in (head, blob)):
            return None
        return MirrorState(refs, head, blob, float(when) if isinstance(when, (int, float)) else 0.0)

    def _save_state(self, state: MirrorState) -> None:
        body = {
            "format": STATE_FORMAT,
            "url": self.url.display,
            "refs": state.refs,
            "head": state.head,
            "config_blob": state.config_blob,
            "synced_at": state.synced_at,
        }
        tmp = self.dir / f".{STATE_FILE}.{uuid.uuid4().hex}"
        try:
            tmp.write_text(json.dumps(body, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.state_path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise RepositoryError(f"cannot write the mirror state {self.state_path}: {exc.strerror}") from exc

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            raise RepositoryError(f"cannot use the cache directory {self.parent}: {exc.strerror}") from exc
        try:
            deadline = time.monotonic() + LOCK_TIMEOUT
            while True:  # bounded by the deadline
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise ConcurrencyError(
                            f"another process has been updating the mirror of {self.url.display} for more "
                            f"than {LOCK_TIMEOUT:.0f}s"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # releases the lock


# ---------------------------------------------------------------------- reading the mirror
def _allows_filter(trace: Path) -> bool:
    """True if the server advertised the ``filter`` capability (protocol v2: on its ``fetch=``
    line; v0: after the NUL of the first ref line), read from git's packet trace."""
    try:
        with open(trace, encoding="utf-8", errors="replace") as fh:
            head = fh.read(256 << 10)
    except OSError:
        return False
    for line in head.splitlines():
        _, sep, payload = line.partition("< ")
        if not sep:
            continue
        payload = payload.strip()
        if payload.startswith("fetch="):
            return "filter" in payload[len("fetch=") :].split()
        if "\\0" in payload:
            return "filter" in payload.split("\\0", 1)[1].split()
    return False


def _entries(git: GitRepo, tree: str) -> dict[str, tuple[int, str]]:
    try:
        return git.tree_entries(tree)
    except (KeyError, AssertionError, RepositoryError):
        return {}  # missing or not a tree: the read gate reports it


def _blob_at(git: GitRepo, tree: str | None, parts: list[str] | tuple[str, ...]) -> str | None:
    """The blob id at ``parts`` below ``tree`` (trees only are read), or None."""
    if tree is None:
        return None
    for i, part in enumerate(parts):
        entry = _entries(git, tree).get(part)
        if entry is None:
            return None
        mode, sha = entry
        if i == len(parts) - 1:
            return sha if mode & _FILE_MASK == _FILE else None
        if mode != _TREE:
            return None
        tree = sha
    return None


def _commit_tree(git: GitRepo, sha: str | None) -> str | None:
    if sha is None:
        return None
    try:
        tree: bytes = git.read_commit(sha).tree
    except (KeyError, RepositoryError):
        return None
    return tree.decode("ascii", "replace")


def _manifest_blob(git: GitRepo, tag_sha: str) -> list[str]:
    try:
        target: bytes = git.read_tag(tag_sha).object[1]
    except (KeyError, RepositoryError):
        return []  # not an annotated tag: the read gate reports it
    blob = _blob_at(git, _commit_tree(git, target.decode("ascii", "replace")), MANIFEST_PARTS)
    return [blob] if blob else []


def _lifecycle_blobs(git: GitRepo, head: str) -> list[str]:
    """``event.json`` of every commit of the chain, and the head's ``state.json``."""
    out: list[str] = []
    sha: str | None = head
    seen: set[str] = set()
    while sha and sha not in seen and len(seen) < _MAX_CHAIN:
        seen.add(sha)
        try:
            commit = git.read_commit(sha)
        except (KeyError, RepositoryError):
            break
        names = ("event.json", "state.json") if sha == head else ("event.json",)
        entries = _entries(git, commit.tree.decode("ascii", "replace"))
        out += [entries[n][1] for n in names if n in entries and entries[n][0] & _FILE_MASK == _FILE]
        sha = commit.parents[0].decode("ascii", "replace") if commit.parents else None
    return out
