"""Promote on merge: what CI runs after a merge to the main branch.

Rules live in ``.uniflow/config.toml``::

    [[promote]]
    model = "sentiment_classifier"
    from = "staging"                      # optional: the candidate must hold this stage
    to = "production"
    when = ["accuracy >= 0.9", "f1 >= 0.85"]

:func:`promote_on_merge` takes the commits ``base..head`` (what a merge brought in). It
works from the clone CI gives it (:mod:`.cifetch` fetches, partial and shallow, the range's
history, the version tags and lifecycle refs it lacks). For each rule, the candidate is the
newest version of the model that the merge brought in (:mod:`.candidates`: its code
commit in the range, or a commit there with its tree or its patch, or the pull request's
head) and, with ``from``, holds that stage. When every condition holds on its metrics it
is promoted, recording the merge commit, how the version was matched and the CI run in the
lifecycle event. A failed condition raises :class:`PolicyError` (after the other rules were
applied and pushed); so does a rule whose ``from`` stage holds a version that matched
nothing, unless ``allow_no_match``. Conditions are parsed, never evaluated:
``<metric> <op> <number>`` with ``>= > <= < == !=``.

"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .._errors import PolicyError, PushRejectedError, RepositoryError, SigningError, UsageError
from .._naming import version_sort_key
from .._records.config import PromoteRule
from .._reports import PromoteReport, PromoteResult, PromoteStatus, PushReport
from .candidates import MergedRange, RuleMatch, match_rule, pr_heads
from .cifetch import RangeFetcher, is_sha
from .gitcmd import ZERO, git_remotes, resolve_git_remote, run_git
from .pull import pull
from .push import push

if TYPE_CHECKING:  # pragma: no cover
    from .._repo import Repository

__all__ = [
    "ci_context",
    "load_rules",
    "promote_on_merge",
]

log = logging.getLogger("uniflow.ci")


PUSH_ATTEMPTS = 3


# ---------------------------------------------------------------------- rules
def load_rules(repo: Repository) -> list[PromoteRule]:
    """The ``[[promote]]`` rules of ``.uniflow/config.toml`` (re-read), validated."""
    repo.reload_config()
    return list(repo.config.rules)


def ci_context(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Who ran this: the CI provider, run id and URL from the usual environment variables."""
    e = os.environ if env is None else env
    if e.get("GITHUB_RUN_ID"):
        server = e.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        ctx = {"provider": "github", "run_id": e["GITHUB_RUN_ID"]}
        if e.get("GITHUB_REPOSITORY"):
            ctx["run_url"] = f"{server}/{e['GITHUB_REPOSITORY']}/actions/runs/{e['GITHUB_RUN_ID']}"
        for key, var in (
            ("attempt", "GITHUB_RUN_ATTEMPT"),
            ("workflow", "GITHUB_WORKFLOW"),
            ("actor", "GITHUB_ACTOR"),
            ("ref", "GITHUB_REF"),
        ):
            if e.get(var):
                ctx[key] = e[var]
        return ctx
    if e.get("GITLAB_CI") or e.get("CI_PIPELINE_URL"):
        ctx = {"provider": "gitlab"}
        for key, var in (
            ("run_url", "CI_PIPELINE_URL"),
            ("run_id", "CI_PIPELINE_ID"),
            ("job_url", "CI_JOB_URL"),
            ("actor", "GITLAB_USER_LOGIN"),
            ("ref", "CI_COMMIT_REF_NAME"),
        ):
            if e.get(var):
                ctx[key] = e[var]
        return ctx
    if e.get("BUILD_URL"):
        return {
            "provider": "jenkins" if e.get("JENKINS_URL") else "ci",
            "run_url": e["BUILD_URL"],
            **({"run_id": e["BUILD_ID"]} if e.get("BUILD_ID") else {}),
        }
    if e.get("CI"):
        return {"provider": "ci"}
    return {}


# ---------------------------------------------------------------------- promote on merge
def _commit(repo: Repository, fetcher: RangeFetcher, rev: str, what: str) -> str:
    """The commit ``rev`` names; a full commit id this clone lacks is fetched first."""
    if not rev or rev.startswith("-") or any(c.isspace() for c in rev):
        raise UsageError(f"invalid {what} revision {rev!r}")

    def resolve() -> subprocess.CompletedProcess[str]:
        return run_git(
            repo.root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False, timeout=60
        )

    proc = resolve()
    if proc.returncode != 0 and is_sha(rev) and fetcher.remote is not None:
        fetcher.commits([rev], parents=False)
        proc = resolve()
    if proc.returncode != 0:
        where = f"in this repository nor on {fetcher.remote!r}" if fetcher.remote else "in this repository"
        raise UsageError(f"{what} revision {rev!r} is not a commit {where}")
    return proc.stdout.strip()


def _base(repo: Repository, fetcher: RangeFetcher, base: str, head_sha: str) -> str | None:
    """The base commit; all zeros (a branch's first push) means ``head``'s first parent, read
    from the commit itself (a shallow clone does not show it)."""
    if base and base != ZERO:
        return _commit(repo, fetcher, base, "base")
    parents = repo.git.read_commit(head_sha).parents
    return parents[0].decode("ascii") if parents else None


def promote_on_merge(
    repo: Repository,
    base: str,
    head: str,
    *,
    push_refs: bool = False,
    remote: str | None = None,
    fetch: bool = True,
    dry_run: bool = False,
    allow_no_match: bool = False,
    env: Mapping[str, str] | None = None,
    promote: PromoteFn | None = None,
) -> PromoteReport:
    """Apply the promotion rules to the versions the merge ``base..head`` brought in.

    With ``fetch`` (and a Git remote) fetches what a CI checkout lacks (:mod:`.cifetch`):
    the range's commits, version tags and lifecycle refs; versions are matched to the range
    by :mod:`.candidates` (merge commits, squash and rebase merges, pull-request jobs). With
    ``push_refs`` pushes the promotions back (pulling and retrying, bounded, if someone else
    promoted meanwhile). Returns the :class:`PromoteReport`; raises :class:`PolicyError`
    carrying it as ``.report`` (after the other rules were applied and pushed) when a
    candidate failed a rule, or when a rule's ``from`` stage holds a version that matched
    nothing in the range and no version that did (unless ``allow_no_match``).
    ``promote`` makes each promotion (default :meth:`Repository.promote`; the CLI passes
    ``uniflow._ops.enforce.promote``, which signs and obeys the policy in force): a
    :class:`PolicyError` or :class:`SigningError` it raises fails that rule.
    """
    remote_name: str | None = None
    if (fetch or push_refs) and (remote is not None or git_remotes(repo.root)):
        remote_name = resolve_git_remote(repo.root, remote)
    fetcher = RangeFetcher(repo.root, remote_name if fetch else None, repo.git)
    head_sha = _commit(repo, fetcher, head, "head")
    base_sha = _base(repo, fetcher, base, head_sha)
    commits = fetcher.complete_range(base_sha, head_sha)
    if fetch and remote_name:
        fetcher.version_tags()
        pull(repo, remote_name, force_tags=True, fetch_chunks=False)
    merged = MergedRange(fetcher, commits, pr_heads(env))
    rules = load_rules(repo)
    ci = ci_context(env)
    span = f"{base_sha[:12] if base_sha else '(root)'}..{head_sha[:12]}"
    results: list[PromoteResult] = []
    for rule in rules:
        matched = match_rule(repo, rule, merged)
        results.append(
            _apply_rule(repo, rule, matched, span, head_sha, base_sha, ci, dry_run=dry_run, promote=promote)
        )
    promoted = sorted({r.model for r in results if r.status == "promoted"})
    pushed = None
    if push_refs and promoted and remote_name:
        pushed = _push_with_retry(repo, fetcher, remote_name, promoted)
    elif push_refs and promoted:
        raise RepositoryError("--push needs a git remote (none is configured)")
    report = PromoteReport(
        base=base_sha,
        head=head_sha,
        commits=len(commits),
        rules=len(rules),
        results=tuple(results),
        promoted=sum(r.status == "promoted" for r in results),
        pushed=pushed,
        ci=ci,
    )
    refused = list(report.failures) + ([] if allow_no_match else list(report.unmatched))
    if refused:
        raise PolicyError("; ".join(_refusal(r) for r in refused), report)
    return report


class PromoteFn(Protocol):
    """Makes one promotion: :meth:`Repository.promote`'s arguments, the repository first."""

    def __call__(
        self,
        repo: Repository,
        name: str,
        version: str,
        stage: str,
        *,
        reason: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Any: ...


def _plain_promote(
    repo: Repository,
    name: str,
    version: str,
    stage: str,
    *,
    reason: str | None = None,
    extra: dict[str, Any] | None = None,
) -> Any:
    return repo.promote(name, version, stage, reason=reason, extra=extra)


def _refusal(r: PromoteResult) -> str:
    if r.status == "unmatched":
        return f"rule #{r.rule} ({r.describe}): {r.detail}"
    return f"{r.model} {r.version} not promoted to {r.to}: {r.detail}"


def _apply_rule(
    repo: Repository,
    rule: PromoteRule,
    matched: RuleMatch,
    span: str,
    head_sha: str,
    base_sha: str | None,
    ci: dict[str, str],
    *,
    dry_run: bool,
    promote: PromoteFn | None = None,
) -> PromoteResult:
    """Evaluate one rule on the versions the range brought; promote its candidate unless
    ``dry_run``."""

    def result(status: PromoteStatus, detail: str, version: str | None = None) -> PromoteResult:
        return PromoteResult(rule.index, rule.describe(), rule.model, rule.to, version, status, detail)

    cands = [v for v in matched.versions if v.version in matched.matches]
    newest = max(cands, key=lambda v: version_sort_key(v.version)) if cands else None
    if newest is not None and newest.stage == rule.to:
        return result("already", f"{rule.model} {newest.version} is already in {rule.to}", newest.version)
    if rule.from_stage:
        cands = [v for v in cands if v.stage == rule.from_stage]
    if not cands and matched.unmatched:
        version = max(matched.unmatched, key=version_sort_key)
        detail = (
            f"{rule.model} {version} holds {rule.from_stage} but matches no commit of {span} "
            f"({matched.unmatched[version]}); if this merge did not bring it, pass --allow-no-match"
        )
        return result("unmatched", detail, version)
    if not cands:
        where = f" in {rule.from_stage}" if rule.from_stage else ""
        return result("no-candidate", f"no version of {rule.model}{where} was registered in {span}")
    mv = max(cands, key=lambda v: version_sort_key(v.version))
    how = matched.matches[mv.version]
    checks = [c.check(mv.metrics) for c in rule.when]
    failed = [d for ok, d in checks if not ok]
    if failed:
        return result("failed", "; ".join(failed), mv.version)
    detail = "; ".join(d for _ok, d in checks) or "no conditions"
    if dry_run:
        return result("would-promote", f"{detail} ({how.describe()})", mv.version)
    extra: dict[str, Any] = {
        "merge_commit": head_sha,
        "base_commit": base_sha,
        "rule": rule.describe(),
        "conditions": [c.text for c in rule.when],
        "matched_by": how.how,
        "matched_commit": how.commit,
    }
    if ci:
        extra["ci"] = ci
    reason = f"promote on merge {head_sha[:12]}: {detail}"
    try:
        (promote or _plain_promote)(repo, rule.model, mv.version, rule.to, reason=reason, extra=extra)
    except (PolicyError, SigningError) as exc:
        return result("failed", str(exc), mv.version)
    return result("promoted", f"{detail} ({how.describe()})", mv.version)


def _push_with_retry(repo: Repository, fetcher: RangeFetcher, remote: str, models: list[str]) -> PushReport:
    """Push; when someone promoted meanwhile, pull (new version tags first, shallow and
    partial as before) and push again, at most ``PUSH_ATTEMPTS`` times."""
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        try:
            return push(repo, remote, models)
        except PushRejectedError:
            if attempt == PUSH_ATTEMPTS:
                raise
            log.info("push of promotions rejected; pulling %s and retrying", remote)
            fetcher.version_tags()
            pull(repo, remote, models, force_tags=True, fetch_chunks=False)
    raise AssertionError("unreachable")  # pragma: no cover
