"""Automation: promote on merge (CI) and the Git hooks that keep bytes and refs in step.

Promote on merge
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

Hooks
    ``pre-push`` uploads the chunks of every model tag being pushed before git sends it;
    ``post-merge`` fetches the registry refs after ``git pull``. Both are tiny shell stubs
    calling ``uniflow hooks run NAME`` with an isolated interpreter (``python -I``), so no
    module committed to the work tree can shadow uniflow or its dependencies;
    :func:`install_hooks` copies them into the repository's hooks directory without
    clobbering someone else's hook.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._errors import PolicyError, PushRejectedError, RepositoryError, UniflowError, UsageError
from ._naming import validate_model_name, version_sort_key
from ._remote import JOBS, TransferStats
from ._sharing import (
    blob_remote_for,
    git_remotes,
    no_blob_remote,
    pull,
    push,
    resolve_git_remote,
    run_git,
    upload_versions,
)

if TYPE_CHECKING:  # pragma: no cover
    from ._registry import ModelRegistry

__all__ = [
    "HOOK_NAMES",
    "Condition",
    "PromoteRule",
    "ci_context",
    "hook_script",
    "install_hooks",
    "load_rules",
    "parse_condition",
    "promote_on_merge",
    "run_post_merge",
    "run_pre_push",
]

log = logging.getLogger("uniflow.ci")

_COND_RE = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_.:/-]{0,127})\s*(?P<op>>=|<=|==|!=|>|<)\s*"
    r"(?P<value>[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?)\s*$"
)
_OPS = {
    ">=": lambda a, b: a >= b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    "<": lambda a, b: a < b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}
ZERO = "0" * 40
ProgressFn = Callable[[int, int], None]
PUSH_ATTEMPTS = 3


# ---------------------------------------------------------------------- rules
@dataclass(frozen=True)
class Condition:
    """``<metric> <op> <number>``, parsed from a rule's ``when`` list."""

    metric: str
    op: str
    value: float
    text: str

    def check(self, metrics: dict[str, Any]) -> tuple[bool, str]:
        """``(holds, explanation)`` on a version's metrics."""
        if self.metric not in metrics:
            return False, f"{self.text} failed: metric {self.metric!r} is missing"
        got = metrics[self.metric]
        if isinstance(got, bool) or not isinstance(got, (int, float)) or not math.isfinite(got):
            return False, f"{self.text} failed: metric {self.metric!r} is {got!r}, not a finite number"
        if _OPS[self.op](got, self.value):
            return True, f"{self.text} held ({self.metric} = {got})"
        return False, f"{self.text} failed ({self.metric} = {got})"


def parse_condition(text: object) -> Condition:
    if not isinstance(text, str):
        raise RepositoryError(f"promotion condition {text!r} must be a string like 'accuracy >= 0.9'")
    m = _COND_RE.fullmatch(text)
    if not m:
        raise RepositoryError(
            f"invalid promotion condition {text!r}: expected '<metric> <op> <number>' with op one of "
            ">=, >, <=, <, ==, !="
        )
    value = float(m["value"])
    if not math.isfinite(value):
        raise RepositoryError(f"invalid promotion condition {text!r}: the number must be finite")
    return Condition(m["metric"], m["op"], value, " ".join(text.split()))


@dataclass(frozen=True)
class PromoteRule:
    model: str
    to: str
    from_stage: str | None
    when: tuple[Condition, ...]
    index: int

    def describe(self) -> str:
        src = f"{self.from_stage} -> " if self.from_stage else ""
        conds = ", ".join(c.text for c in self.when) or "always"
        return f"{self.model}: {src}{self.to} when {conds}"


def load_rules(registry: ModelRegistry) -> list[PromoteRule]:
    """The ``[[promote]]`` rules of ``.uniflow/config.toml``, validated."""
    registry.reload_config()
    raw = registry.config.get("promote", [])
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list):
        raise RepositoryError("[[promote]] in .uniflow/config.toml must be an array of tables")
    rules = []
    for i, r in enumerate(raw, 1):
        where = f"promotion rule #{i} in .uniflow/config.toml"
        if not isinstance(r, dict):
            raise RepositoryError(f"{where} must be a table")
        unknown = set(r) - {"model", "from", "to", "when"}
        if unknown:
            raise RepositoryError(f"{where} has unknown key(s): {', '.join(sorted(unknown))}")
        try:
            model = validate_model_name(r.get("model"))
            to = registry._stage(r.get("to"))
            src = registry._stage(r["from"]) if r.get("from") is not None else None
        except UsageError as exc:
            raise RepositoryError(f"{where}: {exc}") from exc
        when = r.get("when", [])
        if isinstance(when, str):
            when = [when]
        if not isinstance(when, list):
            raise RepositoryError(f"{where}: when must be a list of conditions")
        rules.append(PromoteRule(model, to, src, tuple(parse_condition(c) for c in when), i))
    return rules


def ci_context(env: dict[str, str] | None = None) -> dict[str, Any]:
    """Who ran this: the CI provider, run id and URL from the usual environment variables."""
    e = os.environ if env is None else env
    if e.get("GITHUB_RUN_ID"):
        server = e.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        ctx = {"provider": "github", "run_id": e["GITHUB_RUN_ID"]}
        if e.get("GITHUB_REPOSITORY"):
            ctx["run_url"] = f"{server}/{e['GITHUB_REPOSITORY']}/actions/runs/{e['GITHUB_RUN_ID']}"
        for key, var in (("attempt", "GITHUB_RUN_ATTEMPT"), ("workflow", "GITHUB_WORKFLOW"),
                         ("actor", "GITHUB_ACTOR"), ("ref", "GITHUB_REF")):
            if e.get(var):
                ctx[key] = e[var]
        return ctx
    if e.get("GITLAB_CI") or e.get("CI_PIPELINE_URL"):
        ctx = {"provider": "gitlab"}
        for key, var in (("run_url", "CI_PIPELINE_URL"), ("run_id", "CI_PIPELINE_ID"), ("job_url", "CI_JOB_URL"),
                         ("actor", "GITLAB_USER_LOGIN"), ("ref", "CI_COMMIT_REF_NAME")):
            if e.get(var):
                ctx[key] = e[var]
        return ctx
    if e.get("BUILD_URL"):
        return {"provider": "jenkins" if e.get("JENKINS_URL") else "ci", "run_url": e["BUILD_URL"],
                **({"run_id": e["BUILD_ID"]} if e.get("BUILD_ID") else {})}
    if e.get("CI"):
        return {"provider": "ci"}
    return {}


# ---------------------------------------------------------------------- promote on merge
def _commit(registry: ModelRegistry, rev: str, what: str) -> str:
    if not rev or rev.startswith("-") or any(c.isspace() for c in rev):
        raise UsageError(f"invalid {what} revision {rev!r}")
    proc = run_git(registry.root, "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False, timeout=60)
    if proc.returncode != 0:
        raise UsageError(f"{what} revision {rev!r} is not a commit in this repository (is the clone shallow?)")
    return proc.stdout.strip()


def _range(registry: ModelRegistry, base: str | None, head: str) -> set[str]:
    args = ["rev-list", head] + ([f"^{base}"] if base else [])
    return set(run_git(registry.root, *args, timeout=300).stdout.split())


def promote_on_merge(
    registry: ModelRegistry,
    base: str,
    head: str,
    *,
    push_refs: bool = False,
    remote: str | None = None,
    fetch: bool = True,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Apply the promotion rules to versions registered from commits in ``base..head``.

    Fetches tags (forced: CI checkouts may hold lightweight copies) and lifecycle refs first
    when a Git remote exists; with ``push_refs`` pushes the promotions back (pulling and
    retrying, bounded, if someone else promoted meanwhile). Returns a report; raises
    :class:`PolicyError` (carrying the report as ``.report``) when a candidate failed a rule.
    """
    remote_name: str | None = None
    if (fetch or push_refs) and (remote is not None or git_remotes(registry)):
        remote_name = resolve_git_remote(registry, remote)
    if fetch and remote_name:
        pull(registry, remote_name, force_tags=True, fetch_chunks=False)
    head_sha = _commit(registry, head, "head")
    if not base or base == ZERO:
        parents = run_git(registry.root, "rev-list", "--parents", "-n", "1", head_sha, timeout=60).stdout.split()
        base_sha = parents[1] if len(parents) > 1 else None
    else:
        base_sha = _commit(registry, base, "base")
    commits = _range(registry, base_sha, head_sha)
    rules = load_rules(registry)
    ci = ci_context()
    results: list[dict[str, Any]] = []
    promoted: list[str] = []
    for rule in rules:
        res: dict[str, Any] = {"rule": rule.index, "describe": rule.describe(), "model": rule.model, "to": rule.to,
                               "version": None}
        results.append(res)
        try:
            versions = registry.list_versions(rule.model)
        except UniflowError:
            versions = []
        cands = [v for v in versions if v.code_commit in commits]
        newest = max(cands, key=lambda v: version_sort_key(v.version)) if cands else None
        if newest is not None and newest.stage == rule.to:
            res.update(version=newest.version, status="already",
                       detail=f"{rule.model} {newest.version} is already in {rule.to}")
            continue
        if rule.from_stage:
            cands = [v for v in cands if v.stage == rule.from_stage]
        if not cands:
            where = f" in {rule.from_stage}" if rule.from_stage else ""
            res.update(status="no-candidate", detail=f"no version of {rule.model}{where} was registered in the range")
            continue
        mv = max(cands, key=lambda v: version_sort_key(v.version))
        res["version"] = mv.version
        checks = [c.check(mv.metrics) for c in rule.when]
        failed = [d for ok, d in checks if not ok]
        if failed:
            res.update(status="failed", detail="; ".join(failed))
            continue
        detail = "; ".join(d for _ok, d in checks) or "no conditions"
        if dry_run:
            res.update(status="would-promote", detail=detail)
            continue
        extra: dict[str, Any] = {
            "merge_commit": head_sha,
            "base_commit": base_sha,
            "rule": rule.describe(),
            "conditions": [c.text for c in rule.when],
        }
        if ci:
            extra["ci"] = ci
        reason = f"promote on merge {head_sha[:12]}: {detail}"
        registry.promote(rule.model, mv.version, rule.to, reason=reason, extra=extra)
        res.update(status="promoted", detail=detail)
        promoted.append(rule.model)
    pushed = None
    if push_refs and promoted and remote_name:
        pushed = _push_with_retry(registry, remote_name, sorted(set(promoted)))
    elif push_refs and promoted:
        raise RepositoryError("--push needs a git remote (none is configured)")
    report = {
        "base": base_sha,
        "head": head_sha,
        "commits": len(commits),
        "rules": len(rules),
        "results": results,
        "promoted": len(promoted),
        "pushed": pushed,
        "ci": ci,
    }
    failures = [r for r in results if r["status"] == "failed"]
    if failures:
        err = PolicyError(
            "; ".join(f"{r['model']} {r['version']} not promoted to {r['to']}: {r['detail']}" for r in failures)
        )
        err.report = report  # type: ignore[attr-defined]
        raise err
    return report


def _push_with_retry(registry: ModelRegistry, remote: str, models: list[str]) -> dict[str, Any]:
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        try:
            return push(registry, remote, models)
        except PushRejectedError:
            if attempt == PUSH_ATTEMPTS:
                raise
            log.info("push of promotions rejected; pulling %s and retrying", remote)
            pull(registry, remote, models, force_tags=True, fetch_chunks=False)
    raise AssertionError("unreachable")  # pragma: no cover


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
    "post-merge": 'echo "uniflow post-merge: uniflow is not installed; registry refs not fetched" >&2\nexit 0\n',
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


def hooks_dir(registry: ModelRegistry) -> Path:
    """The repository's hooks directory (honours ``core.hooksPath`` and worktrees)."""
    out = run_git(registry.root, "rev-parse", "--git-path", "hooks", timeout=60).stdout.strip()
    path = Path(out)
    return path if path.is_absolute() else registry.root / path


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
    registry: ModelRegistry, *, force: bool = False, python: str | None = None
) -> list[dict[str, str]]:
    """Install the uniflow hooks; ``[{hook, path, status}]``.

    Status: ``installed``, ``updated`` (an older uniflow hook), ``unchanged``, ``kept`` (a
    different hook exists and ``force`` is false) or ``replaced`` (``force``: the old hook is
    kept as ``<name>.uniflow-backup``).
    """
    target = hooks_dir(registry)
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
    registry: ModelRegistry, git_remote: str, lines: Iterable[str], *, jobs: int = JOBS,
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
            tag = registry.git.read_tag(sha)
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
        spec_name = git_remote if git_remote in git_remotes(registry) else None
        blob_remote = blob_remote_for(registry, None, spec_name)
        if blob_remote is None:
            raise no_blob_remote(git_remote)
        stats = upload_versions(registry, blob_remote, wanted, jobs=jobs, progress=progress)
    return {"versions": [f"{m}/{v}" for m, v in wanted], "chunks": stats.to_dict()}


def run_post_merge(registry: ModelRegistry) -> dict[str, Any]:
    """What the post-merge hook does: fetch registry refs from the current branch's remote."""
    remote = None
    branch = registry.git.branch()
    if branch:
        proc = run_git(registry.root, "config", "--get", f"branch.{branch}.remote", check=False, timeout=60)
        name = proc.stdout.strip()
        if proc.returncode == 0 and name and name != "." and name in git_remotes(registry):
            remote = name
    return pull(registry, remote, fetch_chunks=False)
