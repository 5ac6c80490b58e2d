"""What promote-on-merge fetches, and nothing more: the commits of the merged range, the
registry's version tags and records, and the code commits of the versions it must match.

CI checkouts are shallow (``actions/checkout``: ``--depth=1``, GitLab: ``GIT_DEPTH: 20``)
and hold neither tags nor ``refs/uniflow/*``. Every fetch here is partial
(``--filter=blob:none``: commits and trees, never a blob of code) and, in a shallow clone,
shallow:

* **the range** ``base..head``: ``base`` is fetched by id when missing, then both ends are
  deepened, doubling the depth, until no commit of the range is a shallow boundary (the
  range is then exactly what ``git rev-list head ^base`` gives in a full clone). The depth
  asked is always deeper than the history already there, so a fetch never shortens it;
* **version tags** the clone lacks: ``--depth=1`` (a version commit's parent, the code
  commit, is fetched only when a match needs it), then the ``manifest.msgpack`` blob of each
  by id, in one request;
* **code commits** of candidates, by id, with their parents (``--depth=2``): their trees
  and first-parent diffs are what squash and rebase merges are matched by.

In a full clone nothing is deepened and no ``--depth`` is passed (it would make the clone
shallow). A server without ``uploadpack.allowFilter`` ignores the filter (git warns) and
sends the blobs of the trees it sends; a repository on this machine is asked to allow it.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from .._errors import RemoteError
from .._records.refs import TAGS_PREFIX
from .gitcmd import ls_remote, run_git
from .giturl import parse_git_url
from .mirror import LOCAL_UPLOAD_PACK, _manifest_blob

if TYPE_CHECKING:  # pragma: no cover
    from .._records.git import GitRepo

__all__ = ["MAX_DEPTH", "RangeFetcher", "is_sha"]

log = logging.getLogger("uniflow.ci")

#: the deepest history fetched to complete a range (commits from each end)
MAX_DEPTH = 1 << 14
#: the first depth tried when a shallow clone's range is incomplete
FIRST_DEPTH = 2
_SHA = re.compile(r"[0-9a-f]{40}")


def is_sha(text: str) -> bool:
    return bool(_SHA.fullmatch(text))


class RangeFetcher:
    """Fetches from Git remote ``remote`` into the clone at ``root`` (see the module doc)."""

    def __init__(self, root: Path, remote: str | None, git: GitRepo) -> None:
        self.root = root
        self.remote = remote
        self.git = git
        self.fetches = 0  # git fetch calls made (reported in the log, asserted by tests)

    # ------------------------------------------------------------------ state of the clone
    def shallow(self) -> set[str]:
        """The clone's shallow boundary commits (empty in a full clone)."""
        rel = run_git(self.root, "rev-parse", "--git-path", "shallow", timeout=60).stdout.strip()
        path = Path(rel) if os.path.isabs(rel) else self.root / rel
        try:
            return set(path.read_text(encoding="ascii").split())
        except FileNotFoundError:
            return set()

    def has_commit(self, sha: str) -> bool:
        """Whether object ``sha`` is here (read by dulwich: git itself would fetch a missing
        object of a partial clone from its promisor remote)."""
        return self.git.has_object(sha)

    def _count(self, rev: str) -> int:
        proc = run_git(self.root, "rev-list", "--count", rev, check=False, timeout=300)
        return int(proc.stdout.strip() or 0) if proc.returncode == 0 else 0

    # ------------------------------------------------------------------ fetching
    def _fetch(self, *args: str, what: str, input: str | None = None, noop: bool = False) -> None:
        """``git fetch --filter=blob:none ARGS`` from the remote (no tags, no FETCH_HEAD);
        ``noop``: no negotiation (objects wanted by id)."""
        if self.remote is None:
            raise RemoteError(
                f"{what} is needed (the clone lacks history or objects), but fetching is off "
                "(--no-fetch) or there is no git remote"
            )
        config = ["-c", "protocol.version=2"]
        if noop:
            config += ["-c", "fetch.negotiationAlgorithm=noop"]
        url = run_git(self.root, "remote", "get-url", self.remote, check=False, timeout=60).stdout.strip()
        parsed = parse_git_url(url) if url else None
        if parsed is not None and parsed.is_local or url and os.path.isdir(url):
            config += ["-c", f"remote.{self.remote}.uploadpack={LOCAL_UPLOAD_PACK}"]
        key = f"remote.{self.remote}.partialclonefilter"
        had_filter = run_git(self.root, "config", "--get", key, check=False, timeout=60).returncode == 0
        self.fetches += 1
        log.info("%s", what)
        run_git(
            self.root,
            *config,
            "fetch",
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            "--no-recurse-submodules",
            "--filter=blob:none",
            "--refmap=",  # only the refspecs given here; none of the configured ones
            *args,
            input=input,
            what=what,
        )
        if not had_filter:
            # git made the remote a promisor (missing blobs are fine) *and* made blob:none the
            # default of every later fetch: undo the latter, so that pull and the user's own
            # fetches bring whole objects again (lifecycle records are read from blobs)
            run_git(self.root, "config", "--unset", key, check=False, timeout=60)

    def commits(self, shas: Iterable[str], *, parents: bool, tolerant: bool = False) -> None:
        """Fetch the commits of ``shas`` this clone lacks (with ``parents``: also those whose
        parents it lacks), with their trees and, with ``parents``, their parents' trees.
        ``tolerant``: a commit the remote does not have is skipped (one request each then)."""
        shallow = self.shallow()
        want = sorted({s for s in shas if not self.has_commit(s) or (parents and s in shallow)})
        if not want:
            return
        depth = ["--depth=2" if parents else "--depth=1"] if shallow else []
        try:
            self._fetch(*depth, self.remote or "", *want, what=f"fetching {len(want)} commit(s)")
        except RemoteError as exc:
            if not tolerant or self.remote is None:
                raise
            if len(want) == 1:
                log.info("commit %s is not on %r: %s", want[0][:12], self.remote, exc)
                return
            for sha in want:  # one the server refuses must not hide the others
                try:
                    self._fetch(*depth, self.remote, sha, what=f"fetching commit {sha[:12]}")
                except RemoteError as one:
                    log.info("commit %s is not on %r: %s", sha[:12], self.remote, one)

    def complete_range(self, base: str | None, head: str) -> list[str]:
        """The commits of ``base..head`` (all of ``head``'s history when ``base`` is None),
        deepening a shallow clone until the range is whole; newest first."""
        self.commits([c for c in (base, head) if c], parents=False)
        depth = 0
        while True:  # bounded: the depth doubles up to MAX_DEPTH
            args = ["rev-list", head] + ([f"^{base}"] if base else [])
            commits = run_git(self.root, *args, timeout=300).stdout.split()
            cut = set(commits) & self.shallow()
            if not cut:
                return commits
            if depth >= MAX_DEPTH:
                raise RemoteError(
                    f"the commits of {(base or '')[:12]}..{head[:12]} reach beyond {MAX_DEPTH} commits of "
                    f"history; fetch the history first (git fetch --unshallow --filter=blob:none)"
                )
            have = max(self._count(head), self._count(base) if base else 0)
            depth = min(MAX_DEPTH, max(FIRST_DEPTH, 2 * depth, have + 1))
            ends = [c for c in (base, head) if c]
            self._fetch(f"--depth={depth}", self.remote or "", *ends, what=f"deepening to {depth} commits")

    # ------------------------------------------------------------------ registry refs
    def version_tags(self) -> list[str]:
        """Fetch the remote's version tags this clone lacks or holds with another value (a
        CI checkout may hold lightweight copies), shallow, then their manifests; returns the
        tag refs fetched."""
        if self.remote is None:
            return []
        refs = ls_remote(self.root, self.remote)
        theirs = {r: sha for r, sha in refs.items() if r.startswith(TAGS_PREFIX + "/")}
        stale = sorted(r for r, sha in theirs.items() if self.git.ref(r) != sha)
        if stale:
            depth = ["--depth=1"] if self.shallow() else []
            self._fetch(
                *depth,
                "--stdin",
                self.remote,
                input="".join(f"+{r}:{r}\n" for r in stale),
                what=f"fetching {len(stale)} version tag(s) from {self.remote!r}",
            )
        self.manifests([theirs[r] for r in stale])
        return stale

    def manifests(self, tags: list[str]) -> None:
        """Fetch, in one request, the ``manifest.msgpack`` blobs of the version tags ``tags``
        that this clone lacks (a partial fetch brought their trees, not their blobs)."""
        missing = [b for t in tags for b in _manifest_blob(self.git, t) if not self.git.has_object(b)]
        if not missing:
            return
        self._fetch(
            "--stdin",
            self.remote or "",
            input="".join(f"{b}\n" for b in dict.fromkeys(missing)),
            what=f"fetching {len(missing)} version manifest(s)",
            noop=True,
        )
