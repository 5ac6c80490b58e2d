"""The per-user mirror of a Git URL: the registry's refs and the few blobs reads need, no code.

One bare repository per URL under ``<cache>/mirrors/<stem>-<hash>.git`` (``<cache>`` is
``$UNIFLOW_CACHE_DIR``, else ``$XDG_CACHE_HOME/uniflow``, else ``~/.cache/uniflow``). Every
call goes through the ``git`` binary (``gitcmd.run_git``), then the mirror is read through
:class:`~uniflow._records.git.GitRepo` like any repository, behind the usual validation gate.

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

``uniflow get`` begins the sync on a thread (:func:`begin_sync`) while it loads the
registry's modules; :func:`sync_state`, called where the registry opens, waits for it and
returns its state or raises its error.

A read that verifies signatures (``_ops.consume``) also asks :meth:`Mirror.fetch_history`:
the default branch's history as commits and trees (``--filter=blob:none``, unshallowing what
step 2 left shallow) and the blobs of the two policy files along it, recorded complete per
head in ``uniflow/history-complete``. A sync told so beforehand (``history=True``: a registry
opened with ``signatures="require"`` or ``"warn"``) brings them in steps 2 and 3 (no
``--depth``; the policy blobs in the same request), so that nothing is left to fetch. A sync
that may need them (``history=None``: a read whose mode is not set, ``warn`` once a policy
exists) learns it in step 3: when the default branch's head holds ``.uniflow/policy.toml``,
that request also asks for the head's policy blobs, and one more fetch (``--unshallow``)
completes the history; without a policy, nothing more is fetched.
The mirror's ``HEAD`` points at the default branch's head (``refs/mirror/head``), where the
policy files are read from; ``uniflow/`` also holds the trust root and the lifecycle heads a
verified read saw.

A server that does not allow filters (``uploadpack.allowFilter``) is refused before any
fetch: git would silently ignore the filter and download the code. For a repository on
this machine (a path or ``file://``) the mirror asks git's own ``upload-pack`` to allow them.
Concurrent syncs of one URL are serialised by a lock file; ``offline`` reads the recorded
state without any network.

Trust (docs/remote.md, "What the cache trusts"): git runs in a mirror only when the cache
directories are the user's own and private (else a one-line refusal), the mirror too (else it
is renamed aside, never deleted, and rebuilt), with the config uniflow writes (rewritten
before every sync: no URL, no command), no repository variable inherited and no hook. The
URL (with any token) and a local upload-pack reach git per call through the environment
(``GIT_CONFIG_COUNT``), never a file. After a sync the mirror's refs are exactly the
advertised ones; offline, exactly the recorded ones. Under the per-URL lock, git's ``*.lock``
files left by a killed sync are removed (test points: ``mirror-sync-listed``,
``mirror-sync-fetched-tags``).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .. import _testhooks
from .._errors import IntegrityError, RemoteError, RepositoryError
from .._records.git import GitRepo
from .._records.lifecycle import walk_first_parents
from .._records.paths import POLICY_PATH
from .._records.refs import LIFECYCLE_PREFIX, REGISTRY_PATTERNS, STAGES_PREFIX, TAGS_PREFIX
from .._storage.fsio import flock_within
from .gitcmd import GIT_TIMEOUT, config_env, last_error, run_git
from .giturl import GitUrl

__all__ = [
    "CONFIG_PATH",
    "HEAD_REF",
    "STATE_FILE",
    "Mirror",
    "MirrorState",
    "begin_sync",
    "ensure_private_dir",
    "sync_state",
]

STATE_FILE = "uniflow-mirror.json"
STATE_FORMAT = 1
#: where the default branch's head is kept in the mirror (outside every registry prefix)
HEAD_REF = "refs/mirror/head"
CONFIG_PATH = ".uniflow/config.toml"
MANIFEST_PARTS = (".uniflow", "card", "manifest.msgpack")
#: how long a sync waits for another process syncing the same URL (seconds)
LOCK_TIMEOUT = GIT_TIMEOUT + 60
#: packs a mirror may gather (each fetch adds its own; git's auto gc is off in a mirror)
#: before a sync repacks them into one: a read looks an object up pack by pack
MIRROR_PACK_LIMIT = 32
#: git's own upload-pack for a repository on this machine, allowed to filter and to send by id
LOCAL_UPLOAD_PACK = "git -c uploadpack.allowFilter=true -c uploadpack.allowAnySHA1InWant=true upload-pack"
#: the mirror's whole ``config``, written by uniflow before every sync (no URL, no command)
MIRROR_CONFIG = (
    "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = true\n"
    "\tlogAllRefUpdates = false\n[gc]\n\tauto = 0\n[maintenance]\n\tauto = false\n"
    '[remote "origin"]\n\tpromisor = true\n\tpartialclonefilter = blob:none\n'
)
#: what may sit at the top of a mirror (git's own files; ``*.lock`` and our temp files too)
_TOP_LEVEL = frozenset(
    {"HEAD", "config", "description", "hooks", "info", "objects", "refs", "branches", "logs"}
    | {"packed-refs", "shallow", "FETCH_HEAD", STATE_FILE, "uniflow-ls-remote.trace"}
    | {"uniflow"}  # the trust root and the lifecycle heads a verified read saw (_ops.consume)
)
#: in ``<mirror>/uniflow/``: the default branch head whose history and policy files are complete
HISTORY_FILE = "history-complete"
#: the mirror's HEAD: the default branch's head, where the policy files are read from
MIRROR_HEAD = f"ref: {HEAD_REF}\n"
#: files that would graft history or borrow another object store: never in a mirror of ours
_FORBIDDEN = frozenset({"info/grafts", "objects/info/alternates", "objects/info/http-alternates"})
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


class _EarlySync:
    """A sync run on a thread of its own (:func:`begin_sync`): its state, or the error it raised."""

    def __init__(self, mirror: Mirror, offline: bool, history: bool | None) -> None:
        self.state: MirrorState | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, args=(mirror, offline, history), name="uniflow-mirror-sync"
        )
        self._thread.start()

    def _run(self, mirror: Mirror, offline: bool, history: bool | None) -> None:
        try:
            self.state = mirror.sync(offline=offline, history=history)
        except BaseException as exc:  # noqa: BLE001 (raised again by result(), on the caller's thread)
            self.error = exc

    def result(self) -> MirrorState:
        """The sync's state once it is over; its error, if it failed, raised here."""
        self._thread.join()
        if self.error is not None:
            raise self.error
        assert self.state is not None
        return self.state


#: syncs begun by begin_sync and not yet taken, by (mirror directory, offline, history)
_EARLY: dict[tuple[Path, bool, bool | None], _EarlySync] = {}
_EARLY_LOCK = threading.Lock()


def begin_sync(mirror: Mirror, *, offline: bool = False, history: bool | None = False) -> None:
    """Start :meth:`Mirror.sync` of ``mirror`` on a thread, so that its git round trips
    overlap with what the caller does meanwhile (``uniflow get`` loads the registry's
    modules); the next :func:`sync_state` of the same mirror (and the same ``offline`` and
    ``history``: :meth:`Mirror.sync`) takes its result. Nothing is started when one is
    already under way."""
    key = (mirror.dir, offline, history)
    with _EARLY_LOCK:
        if key not in _EARLY:
            _EARLY[key] = _EarlySync(mirror, offline, history)


def sync_state(mirror: Mirror, *, offline: bool = False, history: bool | None = False) -> MirrorState:
    """The state of the sync :func:`begin_sync` started for ``mirror`` (waited for; its error
    is raised here, as a sync's own would be), else of a sync made now. A begun sync is
    taken once: a later call syncs again."""
    with _EARLY_LOCK:
        early = _EARLY.pop((mirror.dir, offline, history), None)
    return early.result() if early is not None else mirror.sync(offline=offline, history=history)


class Mirror:
    """The bare mirror of one Git URL inside the per-user cache ``home``."""

    def __init__(self, url: GitUrl, home: Path) -> None:
        self.url = url
        self.home = Path(os.path.abspath(home))
        self.parent = self.home / "mirrors"
        self.dir = self.parent / f"{url.key}.git"
        self.lock_path = self.parent / f"{url.key}.lock"
        self.state_path = self.dir / STATE_FILE

    # ------------------------------------------------------------------ public
    def sync(self, *, offline: bool = False, history: bool | None = False) -> MirrorState:
        """Bring the mirror up to date (one ``ls-remote`` when nothing changed) and return
        its state; ``offline`` returns the recorded state without touching the network.
        ``history`` True (a read that will verify signatures): what :meth:`fetch_history`
        needs comes in the same fetches (no ``--depth``, the policy files' blobs with the
        others); None (a read that verifies once a policy exists): the same, when the default
        branch's head holds a policy (see the module).

        Before git runs, the cache directories must be ours and private (else a one-line
        :class:`RepositoryError`), the mirror too (else it is moved aside and rebuilt), its
        config is the one uniflow writes, and git lock files a killed sync left are removed.
        After a sync the mirror's refs are exactly what the server advertised; offline, exactly
        what the last verified sync recorded."""
        if offline:
            return self._offline_state()
        ensure_private_dir(self.parent, self.home)
        with self._locked():
            self._ensure_repo()
            old = self._load_state()
            if old is not None and self._mirror_refs() != _expected_refs(old.refs, old.head):
                old = None  # refs the last sync did not leave: fetch everything again
            for last in (False, True):
                refs, head, filters = self._ls_remote()
                _testhooks.point("mirror-sync-listed")
                if old is not None and old.refs == refs and old.head == head:
                    return old
                if not filters:
                    raise RemoteError(
                        f"the Git server of {self.url.display} does not allow partial fetches "
                        "(uploadpack.allowFilter), and uniflow never downloads a repository's code to reach "
                        "a model; enable the filter on the server, or clone the repository and use "
                        "`uniflow --repo CLONE` (ModelRegistry(CLONE))"
                    )
                self._fetch_refs(old, refs, head, history is True)
                if self._match_refs(refs, head, last=last):
                    break
                old = None  # the server moved between ls-remote and fetch: once more, everything
            config_blob = self._fetch_blobs(old, refs, head, history)
            state = MirrorState(dict(refs), head, config_blob, time.time(), fetched=True)
            self._save_state(state)
            self._consolidate()
            return state

    def _consolidate(self) -> None:
        """Repack the mirror's packs into one once more than :data:`MIRROR_PACK_LIMIT` have
        gathered (under the sync's lock, after its fetches). ``git repack -a -d`` writes the
        new pack before it deletes the old ones, and keeps the promisor packs' objects in a
        promisor pack, so every object is in some pack at every moment and a killed repack
        leaves at worst both copies. A read in another process does not take the lock; one
        that finds a pack it listed gone lists the packs again and reads the object from the
        new pack (``_records.git``, and dulwich's own lookups, do so)."""
        try:
            with os.scandir(self.dir / "objects" / "pack") as entries:
                packs = sum(1 for e in entries if e.name.endswith(".pack"))
        except FileNotFoundError:
            return
        if packs > MIRROR_PACK_LIMIT:
            self._git("repack", "-a", "-d", "-q", what=f"repacking the cache of {self.url.display}")

    def git(self) -> GitRepo:
        """The mirror opened for reading (dulwich, lazily)."""
        return GitRepo(self.dir, bare=True)

    def fetch_history(self, head: str) -> None:
        """Make the default branch's first-parent history from ``head`` complete in the mirror
        (its commits and trees, no code blob: ``--filter=blob:none``, unshallowing what the
        tag fetches left shallow) and fetch the blobs of ``.uniflow/policy.toml`` and
        ``.uniflow/allowed_signers`` along it, so that the policy chain can be verified
        (``_ops.policy.policy_check``). Nothing is fetched when all of it is here already.
        Asked by a read that verifies signatures; ``head`` is the synced state's."""
        if not _SHA.fullmatch(head):
            raise RemoteError(f"invalid default branch head {head!r} for {self.url.display}")
        marker = self.dir / "uniflow" / HISTORY_FILE
        with contextlib.suppress(OSError):
            if marker.read_bytes() == head.encode():
                return  # complete for this head already (a mirror's objects are only added to)
        with self._locked():
            self._complete_history(head)

    def _complete_history(self, head: str) -> None:
        """:meth:`fetch_history`'s work, under the mirror's lock: the history of ``head`` and
        the policy blobs along it fetched where they are not all here, then recorded."""
        complete, blobs = self._policy_needs(head)
        if not complete:
            shallow = ["--unshallow"] if (self.dir / "shallow").is_file() else []
            self._git(
                "fetch", "--no-tags", "--no-recurse-submodules", "--no-write-fetch-head", "--quiet",
                "--filter=blob:none", *shallow, "origin", head,
                what=f"fetching the default branch history of {self.url.display}",
            )  # fmt: skip
            complete, blobs = self._policy_needs(head)
            if not complete:
                raise RemoteError(
                    f"the Git server of {self.url.display} did not send the history of its default "
                    f"branch ({head[:12]}), where the policy files are"
                )
        git = self.git()
        try:
            missing = [b for b in blobs if not git.has_object(b)]
        finally:
            git.close()
        self._fetch_ids(missing)
        marker = self.dir / "uniflow" / HISTORY_FILE
        ensure_private_dir(marker.parent, self.home)
        _write_file(marker, head.encode(), "the mirror's history record")

    def _policy_needs(self, head: str) -> tuple[bool, list[str]]:
        from .._records.policyfiles import policy_blob_ids  # a verified read's only: off a get's imports

        git = self.git()
        try:
            return policy_blob_ids(git, head)
        finally:
            git.close()

    # ------------------------------------------------------------------ trust
    def _offline_state(self) -> MirrorState:
        """The recorded state, if the mirror is ours, private, and holds exactly its refs."""
        never = RemoteError(
            f"{self.url.display} was never fetched into the cache ({self.dir}); "
            "run once without --offline (offline=True)"
        )
        if not self.state_path.parent.is_dir():
            raise never
        ensure_private_dir(self.parent, self.home, create=False)
        with self._locked(optional=True):
            why = self._distrust(clean=False)
            if why is not None:
                raise RemoteError(
                    f"the cached mirror of {self.url.display} is not to be trusted ({why}); "
                    "run once without --offline to rebuild it"
                )
            state = self._load_state()
            if state is None:
                raise never
            if self._mirror_refs() != _expected_refs(state.refs, state.head):
                raise RemoteError(
                    f"the cached mirror of {self.url.display} holds refs its last sync did not record; "
                    "run once without --offline to sync it again"
                )
            return state

    def _distrust(self, *, clean: bool = True) -> str | None:
        """Why the mirror may not be used as it is (None: it is ours and holds only what git
        and uniflow put there). With ``clean``, stale ``*.lock`` and temp files are removed on
        the way: the caller holds the per-URL lock, so no live uniflow process uses them."""
        try:
            st = os.lstat(self.dir)
        except FileNotFoundError:
            return None
        except OSError as exc:
            return f"cannot read it: {exc.strerror}"
        why = _untrusted(st, strict=True)
        if why is None and not os.path.isfile(self.dir / "HEAD"):
            why = "it has no HEAD"
        stale: list[str] = []
        stack = [(str(self.dir), "")]
        while stack and why is None:  # bounded by the directory tree
            path, rel = stack.pop()
            try:
                entries = [(e, e.stat(follow_symlinks=False)) for e in os.scandir(path)]
            except OSError as exc:
                return f"cannot read {rel or '.'}: {exc.strerror}"
            for entry, est in entries:
                why = _untrusted_entry(rel + entry.name, est, top=not rel)
                if why is not None:
                    break
                if stat.S_ISDIR(est.st_mode):
                    stack.append((entry.path, f"{rel}{entry.name}/"))
                elif entry.name.endswith(".lock") or entry.name.startswith(("tmp_", f".{STATE_FILE}.")):
                    stale.append(entry.path)
        for path in stale if clean and why is None else []:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)  # a regular file of ours (checked above); unlink follows no link
        return why

    def _quarantine(self) -> None:
        """Move the mirror aside (renamed, never deleted: it may be another user's)."""
        aside = self.parent / f".quarantine-{self.url.key}-{uuid.uuid4().hex[:12]}.git"
        try:
            os.rename(self.dir, aside)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise RepositoryError(
                f"cannot move the untrusted mirror {self.dir} aside: {exc.strerror}"
            ) from exc

    def _mirror_refs(self) -> dict[str, str]:
        """Every ref of the mirror (read from its files: no git process)."""
        return {f"refs/{k}": v for k, v in self.git().refs("refs").items()}

    def _match_refs(self, refs: dict[str, str], head: str | None, *, last: bool) -> bool:
        """Make the mirror's refs exactly the advertised ones (any other is deleted); False
        when an advertised one holds another value (the server moved), an error if ``last``."""
        expected = _expected_refs(refs, head)
        actual = self._mirror_refs()
        extra = sorted(set(actual) - set(expected))
        if extra:
            lines = "".join(f"delete {name} {actual[name]}\n" for name in extra)
            self._git("update-ref", "--stdin", input=lines, what=f"dropping refs {self.url.display} lacks")
            actual = self._mirror_refs()
        if actual == expected:
            return True
        if not last:
            return False
        wrong = sorted(set(actual.items()) ^ set(expected.items()))[0][0]
        raise RemoteError(
            f"the mirror of {self.url.display} does not match what the server advertised (first: {wrong}); "
            "is someone pushing to it right now? try again"
        )

    # ------------------------------------------------------------------ git
    def _git(self, *args: str, what: str, input: str | None = None, check: bool = True) -> str:
        return self._run(*args, what=what, input=input, check=check).stdout

    def _run(
        self,
        *args: str,
        what: str,
        input: str | None = None,
        check: bool = True,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """git in the mirror: no inherited repository variables, no hook or fsmonitor, and the
        remote's URL (and, for a local one, its upload-pack) given per call, in no file."""
        remote = {"remote.origin.url": self.url.raw}
        if self.url.is_local:
            remote["remote.origin.uploadpack"] = LOCAL_UPLOAD_PACK
        full = {"GIT_DIR": str(self.dir), "GIT_NO_LAZY_FETCH": "1", **config_env(remote), **(env or {})}
        return run_git(
            self.parent,
            "-c",
            "protocol.version=2",
            *args,
            env=full,
            what=what,
            input=input,
            check=check,
            isolated=True,
        )

    def _ensure_repo(self) -> None:
        """Check the mirror (moved aside when untrusted) and create it when absent (built
        aside, then renamed into place); then write its config as uniflow's own."""
        if self._distrust() is not None:
            self._quarantine()
        if not (self.dir / "HEAD").is_file():
            self._create()
        with contextlib.suppress(OSError):
            if (self.dir / "HEAD").read_bytes() != MIRROR_HEAD.encode():
                _write_file(self.dir / "HEAD", MIRROR_HEAD.encode(), "the mirror's HEAD")
        config = self.dir / "config"
        with contextlib.suppress(OSError):
            if config.read_bytes() == MIRROR_CONFIG.encode():
                return
        _write_file(config, MIRROR_CONFIG.encode(), "the mirror's config")

    def _create(self) -> None:
        tmp = self.parent / f".new-{self.url.key}.{uuid.uuid4().hex}"
        try:
            run_git(
                self.parent,
                "init",
                "-q",
                "--bare",
                "--template=",
                str(tmp),
                what="creating the mirror",
                env={"GIT_DIR": str(tmp)},
                isolated=True,
            )
            os.chmod(tmp, 0o700)
            _write_file(tmp / "config", MIRROR_CONFIG.encode(), "the mirror's config")
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
        env = {} if self.url.is_local else {"GIT_TRACE_PACKET": str(trace)}  # capabilities come first
        proc = self._run(
            "ls-remote",
            "--symref",
            "origin",
            "HEAD",
            *REGISTRY_PATTERNS,
            what="ls-remote",
            check=False,
            env=env,
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

    def _fetch_refs(
        self, old: MirrorState | None, refs: dict[str, str], head: str | None, history: bool
    ) -> None:
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
            # --depth=1: a version commit's parent is a code commit; its history is not needed,
            # unless the read verifies signatures: then the history comes now (fetch_history)
            depth = ["--depth=1"]
            if history and head is not None:
                depth = ["--unshallow"] if (self.dir / "shallow").is_file() else []
            what = f"fetching the version tags of {self.url.display}"
            self._git(*base, *depth, "origin", *specs, what=what)
            _testhooks.point("mirror-sync-fetched-tags")
        if old is None or changed(LIFECYCLE_PREFIX + "/"):
            self._git(
                *base,
                "origin",
                f"+{LIFECYCLE_PREFIX}/*:{LIFECYCLE_PREFIX}/*",
                what=f"fetching the lifecycles of {self.url.display}",
            )

    def _fetch_blobs(
        self, old: MirrorState | None, refs: dict[str, str], head: str | None, history: bool | None
    ) -> str | None:
        """Fetch, in one request, the blobs reads need that the mirror lacks; returns the blob
        id of the default branch's ``.uniflow/config.toml`` (None: there is none).

        ``history`` True, or None when the default branch's head holds a policy: also the
        policy files' blobs (the head's, when its history is not all here: a first fetch at
        depth 1), and then that history is completed and recorded (:meth:`_complete_history`:
        one more fetch, which usually finds every policy blob here already). Git refuses one
        fetch that both unshallows and asks for blobs by id ("remote did not send all
        necessary objects"), so these are two."""
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
            tree = _commit_tree(git, head)  # None without a head: then no blob either
            config_blob = _blob_at(git, tree, CONFIG_PATH.split("/"))
            if config_blob:
                wanted.append(config_blob)
            deepen = False
            if head and (
                history or (history is None and _blob_at(git, tree, POLICY_PATH.split("/")) is not None)
            ):
                from .._records.policyfiles import policy_blob_ids  # a verifying read's only

                complete, policy_blobs = policy_blob_ids(git, head)
                wanted += policy_blobs  # the head's at least; the older ones once its history is here
                deepen = not complete
            missing = [b for b in dict.fromkeys(wanted) if not git.has_object(b)]
        finally:
            git.close()
        self._fetch_ids(missing)
        if deepen and head:
            self._complete_history(head)
        return config_blob

    def _fetch_ids(self, missing: list[str]) -> None:
        """Fetch the objects ``missing`` by id, in one request; an error if any stays missing."""
        if not missing:
            return
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
            "url": self.url.display,  # no password or token (giturl.redact)
            "refs": state.refs,
            "head": state.head,
            "config_blob": state.config_blob,
            "synced_at": state.synced_at,
        }
        _write_file(self.state_path, json.dumps(body, sort_keys=True).encode(), "the mirror state")

    @contextlib.contextmanager
    def _locked(self, *, optional: bool = False) -> Iterator[None]:
        """Hold the per-URL lock; ``optional``: go on without it where the cache is read-only."""
        try:
            fd = self._open_lock()
        except _ReadOnly:
            if not optional:
                raise
            yield
            return
        try:
            busy = f"another process has been updating the mirror of {self.url.display}"
            flock_within(fd, LOCK_TIMEOUT, busy)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _open_lock(self) -> int:
        """The per-URL lock file, ours (one someone else left is renamed aside first)."""
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            for _ in range(2):
                try:
                    fd = os.open(self.lock_path, flags, 0o600)
                except OSError as exc:
                    if exc.errno != errno.ELOOP:
                        raise
                else:
                    st = os.fstat(fd)
                    if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022:
                        return fd
                    os.close(fd)
                aside = self.parent / f".quarantine-{self.url.key}-{uuid.uuid4().hex[:12]}.lock"
                os.rename(self.lock_path, aside)
        except OSError as exc:
            cls = _ReadOnly if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else RepositoryError
            raise cls(f"cannot use the cache directory {self.parent}: {exc.strerror}") from exc
        raise RepositoryError(f"the lock file {self.lock_path} keeps being replaced by someone else")


class _ReadOnly(RepositoryError):
    """The lock file cannot be created or opened for writing (a read-only cache)."""


# ---------------------------------------------------------------------- trusting directories
def ensure_private_dir(path: Path, home: Path, *, create: bool = True) -> None:
    """Create ``path`` (each missing directory 0700; with ``create`` only) and check that
    nobody else can change what is there: ``home`` and everything below it up to ``path``
    must be real directories of the current user, not writable by group or others; every
    directory above ``home`` must belong to root or the user and be writable by nobody else
    (or be sticky, like /tmp).
    Anything else is a one-line :class:`RepositoryError`: uniflow runs git in there."""
    path, home = Path(os.path.abspath(path)), Path(os.path.abspath(home))
    chain = [*reversed(path.parents), path]
    for p in chain:
        strict = p == home or home in p.parents
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            if not strict or not create:
                raise RepositoryError(
                    f"cannot create the cache directory {home}: {p} does not exist"
                ) from None
            try:
                os.mkdir(p, 0o700)
                st = os.lstat(p)
            except OSError as exc:
                raise RepositoryError(f"cannot create the cache directory {p}: {exc.strerror}") from exc
        except OSError as exc:
            raise RepositoryError(f"cannot use the cache directory {p}: {exc.strerror}") from exc
        if not strict and stat.S_ISLNK(st.st_mode) and st.st_uid in (0, os.geteuid()):
            try:
                st = os.stat(p)  # a link of root's or ours: its target is checked below
            except OSError as exc:
                raise RepositoryError(f"cannot use the cache directory {p}: {exc.strerror}") from exc
        why = _untrusted(st, strict=strict)
        if why is not None:
            raise RepositoryError(
                f"refusing the cache directory {p}: {why}; another user could make uniflow run commands "
                "as you; set UNIFLOW_CACHE_DIR to a directory only you can write"
            )


def _untrusted(st: os.stat_result, *, strict: bool) -> str | None:
    """Why a directory others could change is not to be trusted (None: it is fine)."""
    me = os.geteuid()
    if stat.S_ISLNK(st.st_mode):
        return "it is a symlink"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    if st.st_uid != me and (strict or st.st_uid != 0):
        return f"it belongs to uid {st.st_uid}, not to you (uid {me})"
    if st.st_mode & 0o022 and (strict or not st.st_mode & stat.S_ISVTX):
        return f"it is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _untrusted_entry(name: str, st: os.stat_result, *, top: bool) -> str | None:
    """Why an entry found in a mirror (``name`` relative to it) makes it untrusted, or None."""
    if st.st_uid != os.geteuid():
        return f"{name} belongs to uid {st.st_uid}"
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        return f"{name} is a symlink or a special file"
    if name in _FORBIDDEN:
        return f"it has {name}"
    allowed = name in _TOP_LEVEL or name.endswith(".lock") or name.startswith(f".{STATE_FILE}.")
    return None if allowed or not top else f"unexpected {name}"


def _expected_refs(refs: dict[str, str], head: str | None) -> dict[str, str]:
    """The refs a mirror holds after a sync that saw ``refs`` and ``head``."""
    return {**refs, HEAD_REF: head} if head is not None else dict(refs)


def _write_file(path: Path, data: bytes, what: str) -> None:
    """Write ``path`` whole (temp file beside it, then rename: never through a symlink)."""
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise RepositoryError(f"cannot write {what} {path}: {exc.strerror}") from exc


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
    try:
        for sha, commit in walk_first_parents(git, head, limit=_MAX_CHAIN):
            names = ("event.json", "state.json") if sha == head else ("event.json",)
            entries = _entries(git, commit.tree.decode("ascii", "replace"))
            out += [entries[n][1] for n in names if n in entries and entries[n][0] & _FILE_MASK == _FILE]
    except IntegrityError:  # a missing or non-commit object ends the chain here
        pass
    return out
