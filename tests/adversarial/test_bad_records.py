"""One bad record spoils only itself (issue 10).

Anyone with push access could blank a model in every clone with one tag: a lightweight tag
under ``refs/tags/models/clf/``, an annotated tag on a commit without a manifest, a manifest
that fails the gate, or a tag object pointing at a blob made ``models list clf`` exit 5, the
UI answer 500 and ``ui --export`` exit 5, while ``pull`` said nothing. Now a malformed record
is skipped by every listing, page and export, named by ``pull`` (on stderr and in the
``rejected`` map of its ``--json`` report; like an invalid ref name, a bad ref that a pull
brings makes it exit 5 after integrating the good data, once: the next pull, bringing
nothing new, exits 0) and reported by
``uniflow verify`` (exit 5). Loading the bad version itself is a one-line error.

The origin is a real bare repository; the attacker's refs are made with plain Git and
pushed with ``git push``.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.adversarial._forge_git import blob, forge_event, forge_version, git_in, one_line_error, tree
from tests.helpers import cli, clone, git, open_registry, shared_setup
from tests.ui._browser import http, ui_server
from uniflow import IntegrityError, UniflowWarning, UsageError, VersionNotFoundError

GOOD = ["v1.0.0", "v1.1.0"]

#: ref under refs/tags/models/clf/ -> how the attacker made it
BAD = {
    "v9.9.9": "lightweight tag on a code commit",
    "latest": "annotated tag with a non-version name",
    "v9.0.0": "annotated tag on a commit without a manifest",
    "v8.0.0": "manifest that is no msgpack",
    "v7.0.0": "annotated tag pointing at a blob",
    "v6.0.0": "annotated tag pointing at a tree",
    "v5.0.0": "annotated tag on a commit whose .uniflow is a file",
}
BAD_VERSIONS = [v for v in BAD if v != "latest"]


def _register(repo: Path, version: str) -> None:
    f = repo.parent / f"clf-{version}.bin"
    f.write_bytes(f"clf {version}".encode() * 500)
    open_registry(repo).register(str(f), "clf", version=version, metrics={"acc": 0.5})


def _attack(m: Path) -> None:
    """Every kind of bad tag under models/clf, pushed with plain git."""
    head = git(m, "rev-parse", "HEAD").strip()
    good_commit = git(m, "rev-parse", "refs/tags/models/clf/v1.1.0^{commit}").strip()
    git(m, "tag", "models/clf/v9.9.9", head)
    git(m, "tag", "-a", "-m", "moving pointer", "models/clf/latest", good_commit)
    git(m, "tag", "-a", "-m", "no manifest", "models/clf/v9.0.0", head)
    forge_version(m, "clf", "v8.0.0", b"\xc1 this is no msgpack")
    git(m, "tag", "-a", "-m", "a blob", "models/clf/v7.0.0", blob(m, b"just bytes\n"))
    head_tree = git(m, "rev-parse", "HEAD^{tree}").strip()
    git(m, "tag", "-a", "-m", "a tree", "models/clf/v6.0.0", head_tree)
    root = tree(m, {".uniflow": ("blob", blob(m, b"not a directory\n"))})
    git(m, "tag", "-a", "-m", "a file", "models/clf/v5.0.0", git_in(m, "commit-tree", root, "-m", "x"))
    git(m, "push", "-q", "origin", *[f"refs/tags/models/clf/{v}" for v in BAD])


@dataclass
class World:
    bare: Path
    good: Path
    victim: Path
    pull: subprocess.CompletedProcess[str]  # the CompletedProcess of the victim's pull after the attack


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    tmp = tmp_path_factory.mktemp("bad-records")
    bare, a = shared_setup(tmp)
    for v in GOOD:
        _register(a, v)
    cli(a, "push")
    victim = clone(bare, tmp / "victim")
    cli(victim, "pull")
    _attack(clone(bare, tmp / "mallory"))
    pulled = cli(victim, "pull", "--json", code=None)
    return World(bare, a, victim, pulled)


def test_pull_names_every_bad_ref_and_integrates_the_good_data(world: World) -> None:
    r = world.pull
    assert r.returncode == 5, (r.stdout, r.stderr)
    line = one_line_error(r.stderr)
    for v in BAD:
        assert f"models/clf/{v}" in line, (v, line)
    assert "lightweight" in line and "blob" in line and "tree" in line
    report = json.loads(r.stdout)
    assert set(report["rejected"]) == {f"refs/tags/models/clf/{v}" for v in BAD}, report
    assert all(report["rejected"].values())
    # the refs did arrive (the remote has them): they are skipped by reads, not hidden
    assert git(world.victim, "rev-parse", "-q", "--verify", "refs/tags/models/clf/v9.9.9").strip()
    # reported once: a pull that brings nothing new is clean
    again = json.loads(cli(world.victim, "pull", "--json").stdout)
    assert again["rejected"] == {}


def test_models_list_shows_only_good_versions(world: World) -> None:
    r = cli(world.victim, "models", "list", "--json")
    rows = json.loads(r.stdout)
    clf = [m for m in rows if m["name"] == "clf"]
    assert clf and clf[0]["latest"] == "v1.1.0" and clf[0]["versions"] == 2, rows

    r = cli(world.victim, "models", "list", "clf", "--json")
    assert [row["version"] for row in json.loads(r.stdout)] == ["v1.0.0", "v1.1.0"]
    text = cli(world.victim, "models", "list", "clf")
    assert "v1.0.0" in text.stdout and "v1.1.0" in text.stdout
    for v in BAD_VERSIONS:
        assert v not in text.stdout
    notice = [ln for ln in text.stderr.splitlines() if ln.startswith("warning: ")]
    assert len(notice) == 1 and "7 unreadable records skipped" in notice[0], text.stderr
    assert all(f"models/clf/{v} (" in notice[0] for v in BAD)
    # twice: the second listing is served by the index and still skips them
    assert [
        row["version"] for row in json.loads(cli(world.victim, "models", "list", "clf", "--json").stdout)
    ] == GOOD


def test_skipped_records_are_kept_in_the_listing_index(world: World) -> None:
    """The refusals are stored with the listing (sha + reason): a listing whose refs did not
    change does not read the bad tags again."""
    listings = open_registry(world.victim).repository.listings
    listings.listing("clf")  # built (or checked) once
    stored = listings._load("clf")
    assert stored is not None and set(stored.listing.skipped) == set(BAD)
    assert stored.listing.versions == GOOD
    assert "lightweight" in stored.listing.skipped["v9.9.9"].reason
    assert "blob" in stored.listing.skipped["v7.0.0"].reason
    assert "tree" in stored.listing.skipped["v6.0.0"].reason


def test_show_and_load_of_good_versions_work(world: World) -> None:
    r = cli(world.victim, "models", "show", "clf", "v1.0.0", "--json")
    assert json.loads(r.stdout)["version"] == "v1.0.0"
    r = cli(world.victim, "models", "show", "clf", "--json")  # newest: a good one
    assert json.loads(r.stdout)["version"] == "v1.1.0"
    reg = open_registry(world.victim)
    loaded = reg.load_path("clf", "v1.0.0")
    assert [p.read_bytes() for p in loaded.rglob("*") if p.is_file()] == [b"clf v1.0.0" * 500]
    assert reg.get("clf").version == "v1.1.0"


@pytest.mark.parametrize("version", BAD_VERSIONS)
def test_the_bad_version_itself_is_a_one_line_error(world: World, version: str) -> None:
    line = one_line_error(cli(world.victim, "models", "show", "clf", version, code=None).stderr)
    assert version in line
    with pytest.raises(IntegrityError):
        open_registry(world.victim).get("clf", version)


def test_non_version_name_is_not_found(world: World) -> None:
    with pytest.raises((VersionNotFoundError, UsageError)) as info:
        open_registry(world.victim).get("clf", "latest")
    assert "latest" in str(info.value)


def test_verify_reports_each_bad_record(world: World) -> None:
    r = cli(world.victim, "verify", code=5)
    out = r.stdout + r.stderr
    for v in BAD:
        assert f"models/clf/{v}" in out, (v, out)
    r = cli(world.victim, "verify", "--json", code=5)
    problems = json.dumps(json.loads(r.stdout))
    for v in BAD:
        assert f"refs/tags/models/clf/{v}" in problems


def test_ui_pages_of_good_versions_answer_200(world: World) -> None:
    with ui_server(world.victim) as (url, _proc):
        for path in ["", "models/clf", "models/clf/v1.0.0", "models/clf/v1.1.0", "api/models/clf"]:
            status, _h, body = http(url + path)
            assert status == 200, (path, status, body[:500])
            for v in BAD_VERSIONS:
                assert f">{v}<" not in body, (path, v)
        status, _h, body = http(url + "models/clf")
        assert "unreadable" in body and "v9.9.9" in body  # the one-line notice
        for v in BAD_VERSIONS:  # the bad record's own page: a one-line error, no traceback
            status, _h, body = http(url + f"models/clf/{v}")
            assert status == 422 and "Traceback" not in body and v in body, (v, status, body[-800:])


def test_ui_export_writes_the_good_pages(world: World, tmp_path: Path) -> None:
    out = tmp_path / "site"
    cli(world.victim, "ui", "--export", str(out))
    assert (out / "index.html").is_file()
    pages = {p.relative_to(out).as_posix() for p in out.rglob("*.html")}
    assert any("v1.0.0" in p for p in pages) and any("v1.1.0" in p for p in pages), pages
    assert not any(v in p for p in pages for v in BAD_VERSIONS), pages


# ---------------------------------------------------------------------- malformed lifecycle


@pytest.fixture
def clone_with_lifecycle(world: World, tmp_path: Path) -> Iterator[Path]:
    """A fresh clone of the good state that pulled the lifecycle of clf (v1.0.0 in staging)."""
    cli(world.good, "models", "promote", "clf", "v1.0.0", "--to", "staging", code=None)
    cli(world.good, "push")
    c = clone(world.bare, tmp_path / "c")
    cli(c, "pull", code=None)
    yield c


@pytest.mark.parametrize("how", ["blob", "corrupt state"])
def test_a_malformed_lifecycle_still_lists_and_promote_refuses(clone_with_lifecycle: Path, how: str) -> None:
    c = clone_with_lifecycle
    ref = "refs/uniflow/models/clf"
    if how == "blob":
        git(c, "update-ref", ref, blob(c, b"not a commit\n"))
    else:
        forge_event(c, "clf", b"\x00{corrupt", {"action": "promote"})
    r = cli(c, "models", "list", "clf", "--json")
    assert [row["version"] for row in json.loads(r.stdout)] == GOOD
    assert [row["stage"] for row in json.loads(r.stdout)] == ["development"] * 2
    warning = [ln for ln in r.stderr.splitlines() if ln.startswith("warning: ") and "lifecycle" in ln]
    assert len(warning) == 1 and "'clf'" in warning[0], r.stderr  # (the bad tags have their own line)
    listed = {m["name"]: m for m in json.loads(cli(c, "models", "list", "--json").stdout)}
    assert listed["clf"]["versions"] == 2 and listed["clf"]["latest"] == "v1.1.0"
    shown = cli(c, "models", "show", "clf", "v1.0.0")
    assert "v1.0.0" in shown.stdout and "warning: " in shown.stderr
    with pytest.warns(UniflowWarning, match="lifecycle"):
        assert open_registry(c).load_path("clf", "v1.0.0").exists()
    line = one_line_error(cli(c, "models", "promote", "clf", "v1.1.0", "--to", "staging", code=None).stderr)
    assert "clf" in line and "lifecycle" in line
    v = cli(c, "verify", code=5)
    assert "refs/uniflow/models/clf" in v.stdout, v.stdout
    with ui_server(c) as (url, _proc):
        for path in ["", "models/clf", "models/clf/v1.0.0"]:
            status, _h, body = http(url + path)
            assert status == 200, (path, status, body[:500])
        assert "lifecycle unreadable" in http(url + "models/clf")[2]
        status, _h, body = http(url + "models/clf/history")  # the bad record itself: a one-line error
        assert status == 422 and "Traceback" not in body and "lifecycle" in body
    out = c.parent / "site"
    cli(c, "ui", "--export", str(out))
    assert (out / "index.html").is_file() and any("v1.0.0" in p.as_posix() for p in out.rglob("*.html"))


def test_a_lifecycle_ref_on_a_blob_pushed_to_the_remote_is_rejected_by_pull(tmp_path: Path) -> None:
    """The remote's refs/uniflow/models/clf is a blob: pull names the model and exits 5,
    the local lifecycle and every read of clf stay as they were."""
    bare, a = shared_setup(tmp_path)
    for v in GOOD:
        _register(a, v)
    cli(a, "models", "promote", "clf", "v1.0.0", "--to", "staging")
    cli(a, "push")
    victim = clone(bare, tmp_path / "victim")
    cli(victim, "pull")
    m = clone(bare, tmp_path / "mallory")
    bad = blob(m, b"not a commit\n")
    git(m, "push", "-q", "-f", "origin", f"{bad}:refs/uniflow/models/clf")
    line = one_line_error(cli(victim, "pull", code=5).stderr)
    assert "'clf'" in line and "not a commit" in line, line
    rows = json.loads(cli(victim, "models", "list", "clf", "--json").stdout)
    assert [(r["version"], r["stage"]) for r in rows] == [("v1.0.0", "staging"), ("v1.1.0", "development")]
    cli(victim, "models", "promote", "clf", "v1.1.0", "--to", "production")
