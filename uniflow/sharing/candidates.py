"""Which versions a merge brought in: a version's code commit matched to the merged range.

A version commit's first parent is the code commit ``register`` ran on. A merge brings that
commit into ``base..head`` only with a merge commit; a squash merge or a rebase merge puts
*other* commits there, and a version registered by a pull-request job sits on GitHub's
synthetic merge commit (``refs/pull/N/merge``), which is on no branch at all. So a code
commit ``C`` matches the range, tried in this order (the first that holds is recorded):

1. ``commit``: ``C`` is in the range (a merge commit, or a fast-forward);
2. ``pr-merge``: ``C`` is a merge whose second parent (a pull request's head, as in a
   synthetic merge commit) is in the range;
3. ``tree``: a commit of the range has ``C``'s tree (a squash merge of the pull request's
   head, or the merge of a synthetic merge commit's two parents: same result, same tree);
4. ``pr-head``: the pull request or merge request the CI names (``GITHUB_EVENT_PATH``'s
   ``pull_request.head.sha``, ``CI_MERGE_REQUEST_SOURCE_BRANCH_SHA``) is ``C``, ``C``'s
   second parent, or has ``C``'s tree;
5. ``patch``: a commit of the range makes the same change as ``C`` against its first
   parent (``git patch-id --stable``: a rebase merge, a cherry-pick).

Steps 3-5 need ``C`` itself, which a CI checkout lacks: :mod:`.cifetch` fetches it first
(commit and trees; the blobs of the files a patch changes only when step 5 runs).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .._errors import UniflowError, UsageError
from .._naming import version_sort_key
from .._records.config import PromoteRule
from .._stages import ModelStage
from .cifetch import RangeFetcher, is_sha
from .gitcmd import run_git

if TYPE_CHECKING:  # pragma: no cover
    from .._repo import Repository
    from .._types import ModelVersion

__all__ = ["DEEP_LIMIT", "Match", "MatchHow", "MergedRange", "RuleMatch", "match_rule", "pr_heads"]

#: without a ``from`` stage, how many of the newest versions are matched by steps 2-5
DEEP_LIMIT = 20

MatchHow = Literal["commit", "pr-merge", "tree", "pr-head", "patch"]


@dataclass(frozen=True)
class Match:
    """How a code commit matched: ``how`` and the commit of the range (or the pull
    request's head) that it matched."""

    how: MatchHow
    commit: str

    def describe(self) -> str:
        short = self.commit[:12]
        return {
            "commit": f"registered from {short}, in the range",
            "pr-merge": f"registered on a merge of pull request head {short}, in the range",
            "tree": f"same tree as {short} of the range",
            "pr-head": f"registered from pull request head {short}",
            "patch": f"same patch as {short} of the range",
        }[self.how]


def pr_heads(env: Mapping[str, str] | None = None) -> list[str]:
    """The pull/merge request heads the CI names: ``pull_request.head.sha`` of the event
    file at ``GITHUB_EVENT_PATH``, ``CI_MERGE_REQUEST_SOURCE_BRANCH_SHA`` (GitLab)."""
    e = os.environ if env is None else env
    out: list[str] = []
    path = e.get("GITHUB_EVENT_PATH")
    if path:
        try:
            with open(path, encoding="utf-8") as fh:
                event = json.load(fh)
        except (OSError, ValueError) as exc:
            raise UsageError(f"GITHUB_EVENT_PATH {path!r} is not a readable JSON event: {exc}") from exc
        pr = event.get("pull_request") if isinstance(event, dict) else None
        head = pr.get("head") if isinstance(pr, dict) else None
        sha = head.get("sha") if isinstance(head, dict) else None
        if isinstance(sha, str) and is_sha(sha):
            out.append(sha)
    sha = e.get("CI_MERGE_REQUEST_SOURCE_BRANCH_SHA", "")
    if is_sha(sha):
        out.append(sha)
    return list(dict.fromkeys(out))


@dataclass(frozen=True)
class _Commit:
    sha: str
    parents: tuple[str, ...]
    tree: str


class MergedRange:
    """The commits ``base..head`` (complete: :meth:`RangeFetcher.complete_range`) and the
    pull request heads, indexed lazily by tree and by patch-id."""

    def __init__(self, fetcher: RangeFetcher, commits: list[str], heads: list[str]) -> None:
        self.fetcher = fetcher
        self.root: Path = fetcher.root
        self.commits = commits
        self.members = frozenset(commits)
        self.heads = heads
        self._info: dict[str, _Commit] = {}
        self._trees: dict[str, str] | None = None
        self._patches: dict[str, str] | None = None

    # ------------------------------------------------------------------ reading commits
    def _load(self, shas: list[str]) -> None:
        """Read the parents and tree of those of ``shas`` present here (one ``git log``)."""
        todo = [s for s in dict.fromkeys(shas) if s not in self._info and self.fetcher.has_commit(s)]
        if not todo:
            return
        out = run_git(
            self.root,
            "log",
            "--no-walk=unsorted",
            "--stdin",
            "--format=%H %T %P",
            input="".join(f"{s}\n" for s in todo),
            timeout=300,
        ).stdout
        for line in out.splitlines():
            sha, tree, *parents = line.split()
            self._info[sha] = _Commit(sha, tuple(parents), tree)

    def info(self, sha: str) -> _Commit | None:
        self._load([sha])
        return self._info.get(sha)

    def trees(self) -> dict[str, str]:
        """``{tree: commit}`` of the range (the newest commit of each tree)."""
        if self._trees is None:
            self._load(self.commits)
            self._trees = {}
            for sha in reversed(self.commits):
                if sha in self._info:
                    self._trees[self._info[sha].tree] = sha
        return self._trees

    def patches(self) -> dict[str, str]:
        """``{patch-id: commit}`` of the range (first-parent diffs, merges included)."""
        if self._patches is None:
            self._patches = {pid: sha for sha, pid in _patch_ids(self.root, self.commits).items()}
        return self._patches

    # ------------------------------------------------------------------ matching
    def fetch(self, codes: list[str]) -> None:
        """Fetch the code commits (with parents) and PR heads the deep checks read; one the
        remote does not have is left out (:meth:`why_not` says so)."""
        self.fetcher.commits([*codes, *self.heads], parents=True, tolerant=True)
        self._load([*codes, *self.heads])

    def by_commit(self, code: str) -> Match | None:
        """Step 1 (no fetch needed): ``code`` is in the range."""
        return Match("commit", code) if code in self.members else None

    def deep(self, code: str) -> Match | None:
        """Steps 2-5 for ``code`` (fetched by :meth:`fetch`)."""
        c = self.info(code)
        if c is None:
            return None
        if len(c.parents) > 1 and c.parents[1] in self.members:
            return Match("pr-merge", c.parents[1])
        hit = self.trees().get(c.tree)
        if hit is not None:
            return Match("tree", hit)
        for head in self.heads:
            h = self.info(head)
            if head == code or head in c.parents[1:] or h is not None and h.tree == c.tree:
                return Match("pr-head", head)
        pid = _patch_ids(self.root, [code]).get(code)
        if pid is not None and pid in self.patches():
            return Match("patch", self.patches()[pid])
        return None

    def why_not(self, code: str) -> str:
        """Why ``code`` matched nothing (after :meth:`deep` returned None), one clause."""
        c = self.info(code)
        if c is None:
            return f"its code commit {code[:12]} is not on the Git remote"
        checks = ["not in the range", "no commit there has its tree", "none makes the same patch"]
        if self.heads:
            checks.append(f"not pull request head {', '.join(h[:12] for h in self.heads)}")
        return f"code commit {code[:12]}: {'; '.join(checks)}"


def _patch_ids(root: Path, commits: list[str]) -> dict[str, str]:
    """``{commit: patch-id}`` of ``commits`` (diff against the first parent), one pipeline."""
    if not commits:
        return {}
    log = run_git(
        root,
        "log",
        "--no-walk=unsorted",
        "--stdin",
        "-p",
        "--diff-merges=first-parent",
        "--no-color",
        "--no-ext-diff",
        "--full-index",
        "--format=commit %H",
        input="".join(f"{c}\n" for c in commits),
        timeout=900,
        what="reading the patches of the range",
    ).stdout
    if not log.strip():
        return {}
    ids = run_git(root, "patch-id", "--stable", input=log, timeout=300).stdout
    out: dict[str, str] = {}
    for line in ids.splitlines():
        pid, _, sha = line.partition(" ")
        if is_sha(sha):
            out[sha] = pid
    return out


# ---------------------------------------------------------------------- a rule's versions
@dataclass(frozen=True)
class RuleMatch:
    """A rule's model: its versions, the ones the range brought (with how), and the
    versions of the rule's ``from`` stage that matched nothing (with why)."""

    versions: list[ModelVersion]
    matches: dict[str, Match]
    unmatched: dict[str, str]


def match_rule(repo: Repository, rule: PromoteRule, merged: MergedRange) -> RuleMatch:
    """Match the versions of ``rule.model`` to the range: every version by commit; the
    versions that could be this merge's (the ``from`` stage's, or without ``from`` the
    newest ones above the ``to`` stage's newest, not archived) by tree, PR head and patch."""
    try:
        versions = repo.list_versions(rule.model)
    except UniflowError:
        return RuleMatch([], {}, {})
    codes = {v.version: _code_commit(repo, v) for v in versions}
    matches = {v: m for v, c in codes.items() if c and (m := merged.by_commit(c))}
    top = [v for v in versions if v.stage == rule.to]  # matched too: a re-run says "already"
    if rule.from_stage:
        deep = [v for v in versions if v.stage == rule.from_stage]
    else:
        floor = max((version_sort_key(v.version) for v in top), default=None)
        deep = [
            v
            for v in versions
            if v.stage not in (rule.to, ModelStage.ARCHIVED)
            and (floor is None or version_sort_key(v.version) > floor)
        ][-DEEP_LIMIT:]
    deep += top
    deep = [v for v in deep if v.version not in matches and codes[v.version]]
    if deep:
        merged.fetch([c for v in deep if (c := codes[v.version])])
    unmatched: dict[str, str] = {}
    for v in deep:
        code = codes[v.version] or ""
        m = merged.deep(code)
        if m is not None:
            matches[v.version] = m
        elif rule.from_stage and v.stage == rule.from_stage:
            unmatched[v.version] = merged.why_not(code)
    return RuleMatch(versions, matches, unmatched)


def _code_commit(repo: Repository, v: ModelVersion) -> str | None:
    """The version commit's first parent (the commit ``register`` ran on)."""
    try:
        commit, _ = repo.index.manifest(v.name, v.version)
        parents = repo.git.read_commit(commit).parents
    except (KeyError, UniflowError):
        return v.code_commit
    return parents[0].decode("ascii") if parents else None
