"""``uniflow import gto``: GTO's Git tags in this repository, replayed as uniflow history.

GTO records everything as annotated Git tags (tag grammar as GTO writes it):
``NAME@vX.Y.Z`` registers a version at the tagged commit, ``NAME@vX.Y.Z!`` deregisters it,
``NAME#STAGE#N`` assigns the version registered at the tagged commit to ``STAGE``,
``NAME#STAGE!#N`` unassigns it, ``NAME@deprecated#N`` deprecates the artifact. ``NAME`` may
carry a directory (``dir/sub=NAME`` in a tag, ``dir/sub:NAME`` in GTO's output). Tags are read
with the ``git`` binary, validated here, replayed in tag-time order, and never changed.

A version's files are the artifact's ``path`` as declared at the tagged commit (``artifacts.yaml``
at the root, else the ``artifacts:`` section of ``dvc.yaml`` in the artifact's directory): from
Git when the path is committed, else from the DVC cache (``.dvc/cache``) when it is DVC-tracked
(a ``.dvc`` file or ``dvc.lock`` at that commit) and the cache holds it (md5 checked), else the
version is reported as failed with the reason. The version commit's first parent is the
tagged commit. The mapping is in docs/migrate.md.
"""

from __future__ import annotations

import errno
import hashlib
import os
import posixpath
import re
import stat
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .._bounded import load_json
from .._errors import NotFoundError, RepositoryError, UniflowError, UsageError
from .._naming import validate_relpath, validate_version
from .._repo import Repository
from .._stages import ModelStage
from .._storage.safefs import DirTree, describe_mode, open_root
from .._types import ProgressFn
from ._common import ImportReport, RegisterFn, Step, identity_of, map_model_name, map_stage_name, run_plan

__all__ = ["GtoTag", "import_gto", "parse_gto_tag"]

SOURCE = "gto"
_NAME = r"[a-z0-9](?:[a-z0-9/-]*[a-z0-9])?"
_SEMVER = r"v(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)\.(?:0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?"
_ART = rf"(?:[a-z0-9_./-]+=)?{_NAME}"
_TAG_RE = re.compile(
    rf"(?P<art>{_ART})(?:@(?P<version>{_SEMVER})(?P<vcancel>!?)|#(?P<stage>{_NAME})(?P<scancel>!?)"
    rf"|@(?P<special>deprecated|created))(?:#(?P<n>\d{{1,9}}))?"
)
_MAX_YAML = 1 << 20
_MAX_LISTING = 16 << 20  #: a DVC .dir listing: about 150,000 files
_LISTING_RATIO = 8  #: its decoded cost, at most this many times its length (see uniflow/_bounded.py)
_GIT_TIMEOUT = 600
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


@dataclass(frozen=True)
class GtoTag:
    """One GTO tag: ``action`` is register, deregister, assign, unassign, deprecate or create."""

    tag: str
    action: str
    artifact: str  #: GTO's name, ``dir:name`` when the artifact lives in a directory
    version: str | None
    stage: str | None
    counter: int


def parse_gto_tag(tag: str) -> GtoTag | None:
    """The GTO meaning of a tag name, or None when it is not a GTO tag."""
    m = _TAG_RE.fullmatch(tag)
    if m is None:
        return None
    art = m["art"].replace("=", ":")
    n = int(m["n"]) if m["n"] else 0
    if m["version"]:
        return GtoTag(tag, "deregister" if m["vcancel"] else "register", art, m["version"], None, n)
    if m["stage"]:
        return GtoTag(tag, "unassign" if m["scancel"] else "assign", art, None, m["stage"], n)
    return GtoTag(tag, "deprecate" if m["special"] == "deprecated" else "create", art, None, None, n)


def _git(root: Path, *args: str) -> bytes:
    # paths come from the repository's YAML: never let git read them as glob patterns
    env = {**os.environ, "LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0", "GIT_LITERAL_PATHSPECS": "1"}
    try:
        proc = subprocess.run(
            ["git", *args],
            cwd=root,
            env=env,
            capture_output=True,
            timeout=_GIT_TIMEOUT,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RepositoryError(f"git {args[0]} failed: {exc}") from exc
    if proc.returncode != 0:
        last = (proc.stderr.decode(errors="replace").strip().splitlines() or ["failed"])[-1]
        raise RepositoryError(f"git {args[0]}: {last}")
    return proc.stdout


@dataclass(frozen=True)
class _Tag:
    parsed: GtoTag
    commit: str
    who: tuple[str, str]
    at: datetime
    message: str


def _read_tags(root: Path, rev: str | None) -> tuple[list[_Tag], list[str]]:
    fmt = (
        "%(refname:strip=2)%00%(objecttype)%00%(*objectname)%00%(taggername)%00"
        "%(taggeremail:trim)%00%(taggerdate:unix)%00%(contents:subject)"
    )
    out = _git(root, "for-each-ref", f"--format={fmt}", "refs/tags").decode("utf-8", "replace")
    reach: set[str] | None = None
    if rev is not None:
        try:
            if rev.startswith("-"):
                raise RepositoryError("an option, not a revision")
            commit = _git(root, "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}")
        except RepositoryError as exc:
            raise UsageError(f"GTO: --rev {rev!r} names no commit of this repository") from exc
        reach = set(_git(root, "rev-list", commit.decode().strip(), "--").decode().split())
    tags, notes = [], []
    for line in out.splitlines():
        parts = line.split("\0")
        if len(parts) != 7:
            continue
        name, kind, target, who, email, when, subject = parts
        parsed = parse_gto_tag(name)
        if parsed is None or parsed.action == "create":
            continue
        if kind != "tag" or not re.fullmatch(r"[0-9a-f]{40}", target) or not when.isdigit():
            notes.append(
                f"skipped tag {name!r}: not an annotated tag on a commit (GTO writes annotated tags)"
            )
            continue
        if reach is not None and target not in reach:
            continue
        tags.append(
            _Tag(
                parsed,
                target,
                identity_of(who, email, "gto"),
                datetime.fromtimestamp(int(when), UTC),
                subject,
            )
        )
    tags.sort(key=lambda t: (t.at, t.parsed.counter, t.parsed.tag))
    return tags, notes


_MAX_NODES = 100_000  #: YAML nodes composed per file (a declaration file has a few hundred)


def _bounded_loader() -> Any:
    """PyYAML's SafeLoader, refusing anchors and aliases (a few hundred bytes of aliases
    expand to gigabytes once the values are used) and stopping after ``_MAX_NODES`` nodes."""
    import yaml

    class Loader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type stubs here
        nodes = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                raise yaml.composer.ComposerError(
                    None, None, "it uses YAML anchors or aliases (refused)", event.start_mark
                )
            self.nodes += 1
            if self.nodes > _MAX_NODES:
                raise yaml.composer.ComposerError(
                    None, None, f"it has more than {_MAX_NODES} YAML nodes (refused)", event.start_mark
                )
            return super().compose_node(parent, index)

    return Loader


def _blob_at(root: Path, commit: str, path: str, cap: int) -> bytes | None:
    """The bytes of the regular file ``path`` in ``commit``'s tree (read from Git objects,
    never the work tree); None when there is none. A symlink, a directory or a blob over
    ``cap`` bytes is refused before it is read."""
    listing = _git(root, "ls-tree", "-l", "-z", "--full-tree", commit, "--", path).split(b"\0")
    for entry in filter(None, listing):
        meta, _, name = entry.partition(b"\t")
        if name.decode("utf-8", "surrogateescape") != path:
            continue
        mode, kind, sha, size = meta.decode().split()
        if kind != "blob" or mode not in ("100644", "100755"):
            what = "symlink" if mode == "120000" else kind
            raise UsageError(f"{path} at {commit[:12]} is a {what}: refused")
        if int(size) > cap:
            raise UsageError(f"{path} at {commit[:12]} is larger than {cap} bytes")
        return _git(root, "cat-file", "blob", sha)
    return None


def _yaml_at(root: Path, commit: str, path: str) -> Any:
    data = _blob_at(root, commit, path, _MAX_YAML)
    if data is None:
        return None
    try:
        import yaml
    except ImportError as exc:
        raise UsageError(
            "importing from GTO needs the gto extra: pip install 'uniflow-registry[gto]'"
        ) from exc
    try:
        return yaml.load(data, Loader=_bounded_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        problem = str(getattr(exc, "problem", None) or "")
        why = problem if problem.startswith("it ") else "it is not valid YAML"
        raise UsageError(f"{path} at {commit[:12]} is not read: {why}") from exc


def _declaration(root: Path, commit: str, artifact: str) -> tuple[str, dict[str, Any]]:
    """``(repository-relative path, declaration)`` of ``artifact`` at ``commit``."""
    folder, _, name = artifact.rpartition(":")
    if folder:
        folder = validate_relpath(folder.strip("/"))
    candidates: list[tuple[str, str | None]] = [] if folder else [("artifacts.yaml", None)]
    candidates.append((posixpath.join(folder, "dvc.yaml") if folder else "dvc.yaml", "artifacts"))
    for file, section in candidates:
        doc = _yaml_at(root, commit, file)
        table = doc.get(section) if isinstance(doc, dict) and section else doc
        spec = table.get(name) if isinstance(table, dict) else None
        if isinstance(spec, dict):
            if spec.get("virtual") or not isinstance(spec.get("path"), str):
                raise UsageError(
                    f"artifact {artifact!r} is virtual or has no path in {file} (nothing to store)"
                )
            try:
                rel = validate_relpath(posixpath.normpath(posixpath.join(folder, spec["path"])))
            except UsageError as exc:
                raise UsageError(f"artifact {artifact!r}: path in {file} refused ({exc})") from exc
            return rel, spec
    raise NotFoundError(
        f"artifact {artifact!r} is declared in neither artifacts.yaml nor dvc.yaml at {commit[:12]}"
    )


def import_gto(
    repo: Repository,
    register: RegisterFn,
    names: Iterable[str] | None = None,
    *,
    rev: str | None = None,
    dry_run: bool = False,
    progress: ProgressFn | None = None,
) -> ImportReport:
    """Import the GTO tags of ``repo``'s Git repository (only artifacts ``names``, if given)."""
    root = repo.root
    tags, notes = _read_tags(root, rev)
    wanted = set(names or [])
    steps: list[Step] = []
    registered: dict[tuple[str, str], str] = {}  # (artifact, commit) -> version
    versions: dict[str, list[str]] = {}
    stage_of: dict[tuple[str, str], str] = {}
    for order, t in enumerate(tags):
        p = t.parsed
        if wanted and p.artifact not in wanted:
            continue
        try:
            model = map_model_name(p.artifact, "GTO artifact")
            if p.action == "register":
                assert p.version is not None
                version = validate_version(p.version)
                steps.append(_version_step(root, t, model, version, order))
                registered[(p.artifact, t.commit)] = version
                versions.setdefault(p.artifact, []).append(version)
                continue
            targets = _targets(t, registered, versions)
            stage = (
                ModelStage.ARCHIVED.value
                if p.action in ("deregister", "deprecate")
                else map_stage_name(p.stage or "")
            )
        except UniflowError as exc:
            notes.append(f"skipped tag {p.tag!r}: {exc}")
            continue
        for i, version in enumerate(targets):
            to = stage
            if p.action == "unassign":
                if stage_of.get((p.artifact, version)) != stage:
                    continue
                to = ModelStage.DEVELOPMENT.value
            elif stage_of.get((p.artifact, version)) == to == ModelStage.ARCHIVED:
                continue  # deprecating an artifact leaves its archived versions as they are
            stage_of[(p.artifact, version)] = to
            key = p.tag if len(targets) == 1 else f"{p.tag}:{version}"
            steps.append(
                Step(
                    model,
                    version,
                    t.at,
                    t.who,
                    key,
                    order=order * 1000 + i,
                    stage=to,
                    reason=f"GTO {p.action} ({p.tag})",
                    releases=p.action != "assign",
                )
            )
    return run_plan(repo, register, SOURCE, steps, dry_run=dry_run, notes=notes, progress=progress)


def _targets(t: _Tag, registered: dict[tuple[str, str], str], versions: dict[str, list[str]]) -> list[str]:
    p = t.parsed
    if p.action == "deprecate":
        return list(versions.get(p.artifact, []))
    if p.action == "deregister":
        assert p.version is not None
        if p.version not in versions.get(p.artifact, []):
            raise NotFoundError(f"version {p.version} was never registered")
        return [p.version]
    version = registered.get((p.artifact, t.commit))
    if version is None:
        raise NotFoundError(f"no version of {p.artifact!r} is registered at commit {t.commit[:12]}")
    return [version]


def _version_step(root: Path, t: _Tag, model: str, version: str, order: int) -> Step:
    path, spec = _declaration(root, t.commit, t.parsed.artifact)
    tags: dict[str, Any] = {}
    if isinstance(spec.get("type"), str):
        tags["gto.type"] = spec["type"]
    if isinstance(spec.get("labels"), list):
        tags["gto.labels"] = ", ".join(str(x) for x in spec["labels"])
    desc = spec.get("description", spec.get("desc"))
    lineage = {
        "gto_tag": t.parsed.tag,
        "gto_artifact": t.parsed.artifact,
        "path": path,
        "gto_message": t.message,
    }
    return Step(
        model,
        version,
        t.at,
        t.who,
        t.parsed.tag,
        order=order,
        fetch=_fetcher(root, t.commit, path),
        tags=tags,
        description=str(desc) if isinstance(desc, str) else "",
        lineage=lineage,
        code_commit=t.commit,
    )


def _fetcher(root: Path, commit: str, path: str) -> Any:
    def fetch(dest: Path) -> Path:
        if _from_git(root, commit, path, dest):
            return dest / path
        _from_dvc(root, commit, path, dest)
        return dest / path

    return fetch


def _from_git(root: Path, commit: str, path: str, dest: Path) -> bool:
    """Write the blobs at ``path`` in ``commit`` below ``dest``; False when Git has none."""
    listing = _git(root, "ls-tree", "-r", "-z", "--full-tree", commit, "--", path).split(b"\0")
    entries: list[tuple[str, str, str]] = []
    for entry in filter(None, listing):
        meta, _, name_b = entry.partition(b"\t")
        mode, kind, sha = meta.decode().split()
        name = validate_relpath(name_b.decode("utf-8", "surrogateescape"))
        if kind != "blob" or mode not in ("100644", "100755"):
            raise UsageError(
                f"{name} at {commit[:12]} is a {'symlink' if mode == '120000' else kind}: refused"
            )
        entries.append((mode, sha, name))
    _check_names(f"commit {commit[:12]}", [name for _, _, name in entries])
    for mode, sha, name in entries:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_git(root, "cat-file", "blob", sha))
        target.chmod(0o755 if mode == "100755" else 0o644)
    return bool(entries)


def _check_names(where: str, names: list[str]) -> None:
    """Refuse a tree that lists a name twice, or both as a file and as a directory (Git
    objects can say so; no file system can hold it)."""
    files: set[str] = set()
    dirs: set[str] = set()
    for name in names:
        if name in files or name in dirs:
            raise UsageError(f"{name} in {where} is listed twice, or both a file and a directory: refused")
        files.add(name)
        parts = name.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
    clash = sorted(files & dirs)
    if clash:
        raise UsageError(f"{clash[0]} in {where} is both a file and a directory: refused")


def _dvc_outs(root: Path, commit: str, path: str) -> dict[str, Any] | None:
    """The DVC out record (``md5``...) of ``path`` at ``commit``: its ``.dvc`` file or dvc.lock."""
    folder = posixpath.dirname(path)
    doc = _yaml_at(root, commit, f"{path}.dvc")
    outs = doc.get("outs") if isinstance(doc, dict) else None
    for out in outs if isinstance(outs, list) else []:
        if isinstance(out, dict) and posixpath.normpath(posixpath.join(folder, str(out.get("path")))) == path:
            return out
    lock = _yaml_at(root, commit, "dvc.lock")
    stages = lock.get("stages") if isinstance(lock, dict) else None
    for stage in (stages or {}).values() if isinstance(stages, dict) else []:
        for out in stage.get("outs", []) if isinstance(stage, dict) else []:
            if isinstance(out, dict) and posixpath.normpath(str(out.get("path"))) == path:
                return out
    return None


_CACHE_DIRS = ((".dvc", "cache", "files", "md5"), (".dvc", "cache"))  #: DVC 3, then DVC 2


def _open_cached(root: Path, md5: str) -> int | None:
    """A descriptor of the DVC cache file of ``md5`` below ``root`` (the work tree: the one
    thing not in Git), or None when it is not cached. Every component from ``root`` down is
    opened ``O_NOFOLLOW``: a symlink anywhere (``.dvc/cache`` itself) is refused, never followed."""

    def refuse(where: str, mode: int) -> None:
        raise UsageError(f"{where.lstrip('/')} is a {describe_mode(mode)}: refused (DVC cache read in place)")

    with DirTree(open_root(root), "", refuse, create=False) as tree:
        for base in _CACHE_DIRS:
            parts = (*base, md5[:2])
            try:
                fd = os.open(md5[2:], _READ_FLAGS, dir_fd=tree.open(parts))
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                refuse("/".join((*parts, md5[2:])), stat.S_IFLNK)
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                os.close(fd)
                refuse("/".join((*parts, md5[2:])), mode)
            return fd
    return None


def _copy_checked(src: int, md5: str, target: Path, what: str) -> None:
    """Copy the open file ``src`` (closed here) to ``target``, checking its md5."""
    digest = hashlib.md5(usedforsecurity=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(target, "wb") as fout:
        for block in iter(lambda: fin.read(1 << 20), b""):
            digest.update(block)
            fout.write(block)
    if digest.hexdigest() != md5:
        raise UsageError(f"{what}: the DVC cache copy does not match its md5 {md5}")


def _from_dvc(root: Path, commit: str, path: str, dest: Path) -> None:
    out = _dvc_outs(root, commit, path)
    md5 = str(out.get("md5") or "") if out else ""
    if not out or not re.fullmatch(r"[0-9a-f]{32}(\.dir)?", md5):
        raise NotFoundError(f"{path} is neither in Git nor DVC-tracked at commit {commit[:12]}")
    missing = (
        f"{path} is DVC-tracked (md5 {md5}) but not in the DVC cache .dvc/cache: "
        f"run 'dvc fetch' for commit {commit[:12]} and import again"
    )
    cached = _open_cached(root, md5)
    if cached is None:
        raise NotFoundError(missing)
    if not md5.endswith(".dir"):
        _copy_checked(cached, md5, dest / path, path)
        return
    with open(cached, "rb") as listing:
        raw = listing.read(_MAX_LISTING + 1)
    if len(raw) > _MAX_LISTING:
        raise UsageError(f"{path}: DVC directory listing larger than {_MAX_LISTING} bytes")
    digest = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    if digest + ".dir" != md5:
        raise UsageError(f"{path}: the DVC directory listing does not match its md5 {md5}")
    # costed before it is decoded: a few MiB of nested empty lists would cost a GiB
    entries = load_json(raw, f"{path}: the DVC directory listing", limit=_MAX_LISTING, ratio=_LISTING_RATIO)
    listed = entries if isinstance(entries, list) else []
    rels = [validate_relpath(str(e.get("relpath"))) if isinstance(e, dict) else "" for e in listed]
    _check_names("the DVC directory listing", [posixpath.join(path, r) for r in rels])
    for entry, rel in zip(listed, rels, strict=True):
        emd5 = str(entry.get("md5") or "") if isinstance(entry, dict) else ""
        src = _open_cached(root, emd5) if re.fullmatch(r"[0-9a-f]{32}", emd5) else None
        if src is None:
            raise NotFoundError(missing)
        _copy_checked(src, emd5, dest / path / rel, f"{path}/{rel}")
