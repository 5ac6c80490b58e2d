"""Promote on merge: what CI runs after a merge to the main branch.

Rules live in ``.uniflow/config.toml``::

    [[promote]]
    model = "sentiment_classifier"
    from = "staging"                      # optional: the candidate must hold this stage
    to = "production"
    when = ["accuracy >= 0.9", "f1 >= 0.85"]

:func:`promote_on_merge` takes the commits ``base..head`` (what a merge brought in); for
each rule, the candidate is the newest version of the model registered from one of those
commits (its manifest's ``code_commit``). When every condition holds on its metrics it
is promoted, recording the merge commit and the CI run in the lifecycle event. A failed
condition raises :class:`PolicyError` (after the other rules were applied and pushed).
Conditions are parsed, never evaluated: ``<metric> <op> <number>`` with
``>= > <= < == !=``.

"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .._config import Condition, PromoteRule, parse_condition
from .._errors import PolicyError, PushRejectedError, RepositoryError, UniflowError, UsageError
from .._naming import version_sort_key
from .._reports import PromoteReport, PromoteResult, PromoteStatus, PushReport
from .gitcmd import ZERO, git_remotes, resolve_git_remote, run_git
from .pull import pull
from .push import push

if TYPE_CHECKING:  # pragma: no cover
    from .._repo import Repository

__all__ = [
    "Condition",
    "PromoteReport",
    "PromoteResult",
    "PromoteRule",
    "ci_context",
    "load_rules",
    "parse_condition",
    "promote_on_merge",
]

log = logging.getLogger("uniflow.ci")


ProgressFn = Callable[[int, int], None]
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
def _commit(repo: Repository, rev: str, what: str) -> str:
    if not rev or rev.startswith("-") or any(c.isspace() for c in rev):
        raise UsageError(f"invalid {what} revision {rev!r}")
    proc = run_git(
        repo.root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False, timeout=60
    )
    if proc.returncode != 0:
        raise UsageError(
            f"{what} revision {rev!r} is not a commit in this repository (is the clone shallow?)"
        )
    return proc.stdout.strip()


def _range(repo: Repository, base: str | None, head: str) -> set[str]:
    args = ["rev-list", head] + ([f"^{base}"] if base else [])
    return set(run_git(repo.root, *args, timeout=300).stdout.split())


def promote_on_merge(
    repo: Repository,
    base: str,
    head: str,
    *,
    push_refs: bool = False,
    remote: str | None = None,
    fetch: bool = True,
    dry_run: bool = False,
) -> PromoteReport:
    """Apply the promotion rules to versions registered from commits in ``base..head``.

    Fetches tags (forced: CI checkouts may hold lightweight copies) and lifecycle refs first
    when a Git remote exists; with ``push_refs`` pushes the promotions back (pulling and
    retrying, bounded, if someone else promoted meanwhile). Returns the
    :class:`PromoteReport`; raises :class:`PolicyError` carrying it as ``.report`` (after the
    other rules were applied and pushed) when a candidate failed a rule.
    """
    remote_name: str | None = None
    if (fetch or push_refs) and (remote is not None or git_remotes(repo.root)):
        remote_name = resolve_git_remote(repo.root, remote)
    if fetch and remote_name:
        pull(repo, remote_name, force_tags=True, fetch_chunks=False)
    head_sha = _commit(repo, head, "head")
    if not base or base == ZERO:
        parents = run_git(repo.root, "rev-list", "--parents", "-n", "1", head_sha, timeout=60).stdout.split()
        base_sha = parents[1] if len(parents) > 1 else None
    else:
        base_sha = _commit(repo, base, "base")
    commits = _range(repo, base_sha, head_sha)
    rules = load_rules(repo)
    ci = ci_context()
    results: list[PromoteResult] = []
    promoted: list[str] = []
    for rule in rules:
        result = _apply_rule(repo, rule, commits, head_sha, base_sha, ci, dry_run=dry_run)
        results.append(result)
        if result.status == "promoted":
            promoted.append(rule.model)
    pushed = None
    if push_refs and promoted and remote_name:
        pushed = _push_with_retry(repo, remote_name, sorted(set(promoted)))
    elif push_refs and promoted:
        raise RepositoryError("--push needs a git remote (none is configured)")
    report = PromoteReport(
        base=base_sha,
        head=head_sha,
        commits=len(commits),
        rules=len(rules),
        results=tuple(results),
        promoted=len(promoted),
        pushed=pushed,
        ci=ci,
    )
    if report.failures:
        raise PolicyError(
            "; ".join(f"{r.model} {r.version} not promoted to {r.to}: {r.detail}" for r in report.failures),
            report,
        )
    return report


def _apply_rule(
    repo: Repository,
    rule: PromoteRule,
    commits: set[str],
    head_sha: str,
    base_sha: str | None,
    ci: dict[str, str],
    *,
    dry_run: bool,
) -> PromoteResult:
    """Evaluate one rule on the versions registered from ``commits``; promote its candidate
    unless ``dry_run``."""

    def result(status: PromoteStatus, detail: str, version: str | None = None) -> PromoteResult:
        return PromoteResult(rule.index, rule.describe(), rule.model, rule.to, version, status, detail)

    try:
        versions = repo.list_versions(rule.model)
    except UniflowError:
        versions = []
    cands = [v for v in versions if v.code_commit in commits]
    newest = max(cands, key=lambda v: version_sort_key(v.version)) if cands else None
    if newest is not None and newest.stage == rule.to:
        return result("already", f"{rule.model} {newest.version} is already in {rule.to}", newest.version)
    if rule.from_stage:
        cands = [v for v in cands if v.stage == rule.from_stage]
    if not cands:
        where = f" in {rule.from_stage}" if rule.from_stage else ""
        return result("no-candidate", f"no version of {rule.model}{where} was registered in the range")
    mv = max(cands, key=lambda v: version_sort_key(v.version))
    checks = [c.check(mv.metrics) for c in rule.when]
    failed = [d for ok, d in checks if not ok]
    if failed:
        return result("failed", "; ".join(failed), mv.version)
    detail = "; ".join(d for _ok, d in checks) or "no conditions"
    if dry_run:
        return result("would-promote", detail, mv.version)
    extra: dict[str, Any] = {
        "merge_commit": head_sha,
        "base_commit": base_sha,
        "rule": rule.describe(),
        "conditions": [c.text for c in rule.when],
    }
    if ci:
        extra["ci"] = ci
    reason = f"promote on merge {head_sha[:12]}: {detail}"
    repo.promote(rule.model, mv.version, rule.to, reason=reason, extra=extra)
    return result("promoted", detail, mv.version)


def _push_with_retry(repo: Repository, remote: str, models: list[str]) -> PushReport:
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        try:
            return push(repo, remote, models)
        except PushRejectedError:
            if attempt == PUSH_ATTEMPTS:
                raise
            log.info("push of promotions rejected; pulling %s and retrying", remote)
            pull(repo, remote, models, force_tags=True, fetch_chunks=False)
    raise AssertionError("unreachable")  # pragma: no cover
