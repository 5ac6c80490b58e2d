"""``uniflow models list NAME`` from the per-model listing index (issue 14, items 1 and 5).

The index (uniflow/_records/listing.py) may only cost time: whatever plain Git does to the tags
(delete, re-create, fetch, ``git pack-refs --all``), in a fresh clone without any cache,
and whatever is written into the cache file, the listing is what the refs say now. Each
test first lets the loose-ref directory age (its mtime set in the past, as after a quiet
while), so the index is trusted and the check of its stamps is what is exercised.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

import blake3
import msgpack
import pytest

from tests.helpers import cli, clone, git, make_repo
from uniflow import ModelRegistry
from uniflow._records.listing import JSON_KIND, KIND, listing_key

MODEL = "m"


def _age(repo: Path, model: str = MODEL) -> None:
    """Set the mtime of the model's loose-ref directory a minute back (a quiet while)."""
    d = repo / ".git" / "refs" / "tags" / "models" / model
    if d.is_dir():
        past = time.time_ns() - 60 * 10**9
        os.utime(d, ns=(past, past))


def _index_file(repo: Path, model: str = MODEL) -> Path:
    key = listing_key(ModelRegistry(repo).repository.git.git_dir, model)
    return repo / ".git" / "uniflow" / "cache" / "git" / KIND / key[:2] / key


def _register(
    reg: ModelRegistry, tmp: Path, version: str, accuracy: float, data: bytes | None = None
) -> None:
    src = tmp / f"w-{version}-{accuracy}.bin"
    src.write_bytes(data if data is not None else f"weights {version} {accuracy} ".encode() * 50)
    reg.register(str(src), MODEL, version=version, metrics={"accuracy": accuracy, "loss": 1 - accuracy})


def _listed(repo: Path, *args: str) -> list[tuple[str, str, float]]:
    """``(version, stage, accuracy)`` of every version, from ``uniflow models list m --json``."""
    data = json.loads(cli(repo, "models", "list", MODEL, "--json", *args).stdout)
    return [(v["version"], v["stage"], v["metrics"]["accuracy"]) for v in data]


def _table_versions(repo: Path) -> list[str]:
    lines = cli(repo, "models", "list", MODEL).stdout.splitlines()[1:]
    return [line.split()[0] for line in lines]


@pytest.fixture
def three(repo: Path, tmp_path: Path) -> Path:
    """``m`` v1.0.0, v1.1.0, v1.2.0 (accuracy .1, .2, .3), v1.2.0 in production, listed once."""
    reg = ModelRegistry(repo)
    for i in range(3):
        _register(reg, tmp_path, f"v1.{i}.0", round(0.1 * (i + 1), 1))
    reg.promote(MODEL, "v1.2.0", "production")
    _age(repo)
    assert _table_versions(repo) == ["v1.0.0", "v1.1.0", "v1.2.0"]
    assert _index_file(repo).is_file()
    return repo


def test_rows_match_the_manifests(three: Path) -> None:
    reg = ModelRegistry(three)
    rows = reg.version_rows(MODEL)
    full = reg.list_versions(MODEL)
    assert [(r.version, r.stage, r.framework, r.size, r.metrics, r.created_at) for r in rows] == [
        (v.version, v.stage, v.framework, v.size, v.metrics, v.created_at) for v in full
    ]
    assert [r.version for r in reg.version_rows(MODEL, stage="production")] == ["v1.2.0"]
    assert _listed(three) == [
        ("v1.0.0", "development", 0.1),
        ("v1.1.0", "development", 0.2),
        (
            "v1.2.0",
            "production",
            0.3,
        ),
    ]


def test_plain_git_delete_and_recreate_of_a_tag(three: Path) -> None:
    sha = git(three, "rev-parse", "refs/tags/models/m/v1.1.0").strip()
    git(three, "tag", "-d", "models/m/v1.1.0")
    assert _table_versions(three) == ["v1.0.0", "v1.2.0"]
    _age(three)
    assert [v for v, _, _ in _listed(three)] == ["v1.0.0", "v1.2.0"]
    git(three, "update-ref", "refs/tags/models/m/v1.1.0", sha)
    assert [v for v, _, _ in _listed(three)] == ["v1.0.0", "v1.1.0", "v1.2.0"]


def test_a_version_deleted_and_registered_again_shows_its_new_content(three: Path, tmp_path: Path) -> None:
    git(three, "tag", "-d", "models/m/v1.1.0")
    _register(ModelRegistry(three), tmp_path, "v1.1.0", 0.9, data=b"other weights " * 50)
    assert _listed(three)[1] == ("v1.1.0", "development", 0.9)
    out = cli(three, "models", "list", MODEL).stdout
    assert "accuracy=0.9 " in out and "accuracy=0.2 " not in out


def test_tags_fetched_by_plain_git_are_listed(three: Path, tmp_path: Path) -> None:
    other = clone(three, tmp_path / "other")
    assert [v for v, _, _ in _listed(other)] == ["v1.0.0", "v1.1.0", "v1.2.0"]
    _age(other)
    assert _index_file(other).is_file()
    _register(ModelRegistry(three), tmp_path, "v1.3.0", 0.4)
    git(other, "fetch", "-q", "origin", "refs/tags/*:refs/tags/*")
    assert [v for v, _, _ in _listed(other)] == ["v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0"]


def test_fresh_clone_lists_from_git(three: Path, tmp_path: Path) -> None:
    other = clone(three, tmp_path / "fresh")
    assert not (other / ".git" / "uniflow" / "cache").exists()
    want = [(v, "development", a) for v, _, a in _listed(three)]  # lifecycles are not cloned
    assert _listed(other) == want
    assert _table_versions(other) == ["v1.0.0", "v1.1.0", "v1.2.0"]


def test_after_pack_refs_list_promote_show_and_load_work(three: Path, tmp_path: Path) -> None:
    before = cli(three, "models", "list", MODEL).stdout
    git(three, "pack-refs", "--all")
    assert not list((three / ".git" / "refs" / "tags").rglob("v1.*"))
    assert "refs/tags/models/m/v1.0.0" in (three / ".git" / "packed-refs").read_text()
    assert cli(three, "models", "list", MODEL).stdout == before
    cli(three, "models", "promote", MODEL, "v1.1.0", "--to", "staging")
    assert _listed(three)[1] == ("v1.1.0", "staging", 0.2)
    show = json.loads(cli(three, "models", "show", MODEL, "v1.1.0", "--json").stdout)
    assert show["version"] == "v1.1.0" and show["stage"] == "staging"
    reg = ModelRegistry(three)
    loaded = reg.load_path(MODEL, stage="production")
    assert (loaded / "w-v1.2.0-0.3.bin").read_bytes() == b"weights v1.2.0 0.3 " * 50
    # a new loose version next to the packed ones, then a packed one deleted by plain git
    _register(reg, tmp_path, "v1.3.0", 0.4)
    assert [v for v, _, _ in _listed(three)] == ["v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0"]
    git(three, "pack-refs", "--all")
    _age(three)
    git(three, "tag", "-d", "models/m/v1.0.0")  # rewrites packed-refs only
    assert [v for v, _, _ in _listed(three)] == ["v1.1.0", "v1.2.0", "v1.3.0"]
    assert ModelRegistry(three).get(MODEL, "v1.3.0").metrics["accuracy"] == 0.4
    assert "v1.3.0 (latest)" in cli(three, "models", "list", MODEL).stdout
    git(three, "fsck", "--strict")


def test_packed_refs_rewritten_by_hand_is_noticed(three: Path) -> None:
    """Only packed-refs changes (the loose directory is gone): its section's digest does."""
    git(three, "pack-refs", "--all")
    assert [v for v, _, _ in _listed(three)] == ["v1.0.0", "v1.1.0", "v1.2.0"]
    packed = three / ".git" / "packed-refs"
    lines = packed.read_text().splitlines(keepends=True)
    kept, skip = [], False
    for line in lines:  # drop v1.2.0 and its peeled line
        if line.rstrip().endswith("refs/tags/models/m/v1.2.0"):
            skip = True
            continue
        if skip and line.startswith("^"):
            continue
        skip = False
        kept.append(line)
    packed.write_text("".join(kept))
    assert [v for v, _, _ in _listed(three)] == ["v1.0.0", "v1.1.0"]


@pytest.mark.parametrize(
    "forge",
    ["garbage", "unkeyed digest", "other model's entry", "truncated"],
)
def test_forged_index_is_ignored_and_replaced(three: Path, tmp_path: Path, forge: str) -> None:
    path = _index_file(three)
    genuine = path.read_bytes()
    payload = genuine[32:]
    d = msgpack.unpackb(payload, raw=False)
    rows = msgpack.unpackb(d[-1], raw=False)
    rows[-1] = [{"accuracy": 0.99}] * len(rows[-1])  # every version claims 0.99
    d[-1] = msgpack.packb(rows, use_bin_type=True)
    lie = msgpack.packb(d, use_bin_type=True)
    if forge == "garbage":
        path.write_bytes(os.urandom(len(genuine)))
    elif forge == "unkeyed digest":
        path.write_bytes(blake3.blake3(lie).digest() + lie)
    elif forge == "other model's entry":  # a genuine entry of model "n" copied under m's key
        src = tmp_path / "n.bin"
        src.write_bytes(b"n weights " * 50)
        ModelRegistry(three).register(str(src), "n", version="v1.0.0", metrics={"accuracy": 0.99})
        cli(three, "models", "list", "n")
        shutil.copyfile(_index_file(three, "n"), path)
    else:
        path.write_bytes(genuine[: len(genuine) // 2])
    assert _listed(three) == [
        ("v1.0.0", "development", 0.1),
        ("v1.1.0", "development", 0.2),
        (
            "v1.2.0",
            "production",
            0.3,
        ),
    ]
    assert path.read_bytes()[32:] != lie


@pytest.mark.parametrize("packed", [False, True])
def test_a_genuine_index_over_other_refs_is_not_believed(three: Path, tmp_path: Path, packed: bool) -> None:
    """The repository's .git is replaced by another one's (same path, same user key: the
    index's MAC is valid), the loose refs aged or packed: its stamps no longer match."""
    other = make_repo(tmp_path / "other")
    _register(ModelRegistry(other), tmp_path, "v7.0.0", 0.7)
    if packed:
        git(other, "pack-refs", "--all")
        git(three, "pack-refs", "--all")
        assert _listed(three)[0] == ("v1.0.0", "development", 0.1)  # the index, rebuilt packed
    genuine = _index_file(three).read_bytes()
    shutil.rmtree(three / ".git")
    shutil.copytree(other / ".git", three / ".git", symlinks=True)
    _index_file(three).parent.mkdir(parents=True, exist_ok=True)  # the cache lives in .git:
    _index_file(three).write_bytes(genuine)  # put the genuine entry back beside the other refs
    _age(three)
    assert _index_file(three).read_bytes() == genuine
    assert _listed(three) == [("v7.0.0", "development", 0.7)]


def test_without_a_cache_key_the_listing_still_works(three: Path, tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    out = cli(three, "models", "list", MODEL, env={"UNIFLOW_CACHE_DIR": str(blocked / "sub")}).stdout
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["v1.0.0", "v1.1.0", "v1.2.0"]


def test_iso_text_is_iso_time_of_the_parsed_text() -> None:
    from uniflow.cli._format import iso_text, iso_time

    for text in (
        "2026-01-01T00:00:01+00:00",
        "2026-01-01T00:00:01.250000+00:00",
        "2026-01-01T02:00:01+02:00",
        "2026-01-01T00:00:01",
        "2026-01-01 00:00:01+00:00",
        "2026-01-01T00:00:01Z",
    ):
        when = datetime.fromisoformat(text)
        assert iso_text(text) == iso_time(when if when.tzinfo else when.replace(tzinfo=UTC)), text


def test_lower_limits_are_applied_to_indexed_versions(three: Path) -> None:
    """Rows were checked against the limits of their time: new [limits] re-run the gate."""
    config = three / ".uniflow" / "config.toml"
    config.write_text(config.read_text() + "\n[limits]\nmax_version_bytes = 100\n")
    r = cli(three, "models", "list", MODEL, code=None)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "max_version_bytes" in r.stderr or "limit" in r.stderr.lower(), r.stderr


def test_models_list_of_all_models_follows_plain_git(three: Path, tmp_path: Path) -> None:
    src = tmp_path / "n.bin"
    src.write_bytes(b"n weights " * 50)
    ModelRegistry(three).register(str(src), "n", version="v2.0.0")  # never listed by name
    summary = {m["name"]: m for m in json.loads(cli(three, "models", "list", "--json").stdout)}
    assert (summary["m"]["latest"], summary["m"]["versions"]) == ("v1.2.0", 3)
    assert summary["m"]["stages"] == {"production": "v1.2.0"}
    assert (summary["n"]["latest"], summary["n"]["versions"]) == ("v2.0.0", 1)
    git(three, "pack-refs", "--all")
    _age(three)
    git(three, "tag", "-d", "models/m/v1.2.0")
    summary = {m["name"]: m for m in json.loads(cli(three, "models", "list", "--json").stdout)}
    assert (summary["m"]["latest"], summary["m"]["versions"]) == ("v1.1.0", 2)
    assert summary["m"]["stages"] == {}  # the production holder's tag is gone
    assert [line.split()[0] for line in cli(three, "models", "list", "n").stdout.splitlines()[1:]] == [
        "v2.0.0"
    ]
    fresh = clone(three, tmp_path / "fresh")
    names = [m["name"] for m in json.loads(cli(fresh, "models", "list", "--json").stdout)]
    assert names == ["m", "n"]


def _json_of_manifests(repo: Path, *args: str) -> str:
    """What ``models list m --json`` printed before the index: ``to_dict()`` of every version
    ``list_versions`` builds from the manifests, through the CLI's JSON rules."""
    from uniflow._jsonable import dumps

    stage = args[1] if args else None
    return dumps([v.to_dict() for v in ModelRegistry(repo).list_versions(MODEL, stage=stage)]) + "\n"


def _json_index_file(repo: Path) -> Path:
    key = listing_key(ModelRegistry(repo).repository.git.git_dir, MODEL)
    return repo / ".git" / "uniflow" / "cache" / "git" / JSON_KIND / key[:2] / key


def _assert_json_same(repo: Path, *args: str) -> None:
    for _ in range(2):  # built (or updated), then read back from the index
        assert cli(repo, "models", "list", MODEL, "--json", *args).stdout == _json_of_manifests(repo, *args)


def test_json_from_the_index_is_the_json_of_the_manifests(three: Path, tmp_path: Path) -> None:
    reg = ModelRegistry(three)
    src = tmp_path / "odd.bin"
    src.write_bytes(b"odd weights " * 40)
    reg.register(  # every field to_dict() has, non-ASCII and non-finite values included
        str(src),
        MODEL,
        version="v2.0.0-rc.1",
        metrics={"accuracy": 0.5, "été": float("nan"), "nested": {"k": [1, 2.5, None]}},
        tags={"owner": "zoë", "quote": 'say "hi"'},
        params={"lr": 1e-3, "layers": [3, 4]},
        description="ligne 1\nligne 2 \u2713",
    )
    _age(three)
    _assert_json_same(three)
    assert _json_index_file(three).is_file()
    _assert_json_same(three, "--stage", "production")
    _assert_json_same(three, "--stage", "staging")  # nothing: "[]"
    cli(three, "models", "promote", MODEL, "v1.1.0", "--to", "staging")  # a stage is no row
    _assert_json_same(three)
    # tags changed by plain git: one deleted, one re-created over other content
    git(three, "tag", "-d", "models/m/v1.0.0")
    git(three, "tag", "-d", "models/m/v1.1.0")
    _register(reg, tmp_path, "v1.1.0", 0.9, data=b"other weights " * 50)
    _age(three)
    _assert_json_same(three)
    assert '"accuracy": 0.9' in cli(three, "models", "list", MODEL, "--json").stdout
    git(three, "pack-refs", "--all")
    _assert_json_same(three)
    _register(reg, tmp_path, "v1.0.0", 0.1)  # loose again, beside the packed ones
    _assert_json_same(three)
    assert [v["version"] for v in json.loads(cli(three, "models", "list", MODEL, "--json").stdout)] == [
        "v1.0.0",
        "v1.1.0",
        "v1.2.0",
        "v2.0.0-rc.1",
    ]


@pytest.mark.parametrize("forge", ["unkeyed digest", "other model's entry", "garbage"])
def test_forged_json_rows_are_ignored(three: Path, tmp_path: Path, forge: str) -> None:
    _assert_json_same(three)
    path = _json_index_file(three)
    genuine = path.read_bytes()
    d = msgpack.unpackb(genuine[32:], raw=False)
    d[5] = [h.replace('"framework"', '"framework": "forged", "x"') for h in d[5]]
    lie = msgpack.packb(d, use_bin_type=True)
    if forge == "unkeyed digest":
        path.write_bytes(blake3.blake3(lie).digest() + lie)
    elif forge == "other model's entry":  # a genuine entry of model "n" copied under m's key
        src = tmp_path / "n.bin"
        src.write_bytes(b"n weights " * 50)
        ModelRegistry(three).register(str(src), "n", version="v1.0.0", metrics={"accuracy": 0.99})
        cli(three, "models", "list", "n", "--json")
        key = listing_key(ModelRegistry(three).repository.git.git_dir, "n")
        shutil.copyfile(three / ".git" / "uniflow" / "cache" / "git" / JSON_KIND / key[:2] / key, path)
    else:
        path.write_bytes(os.urandom(len(genuine)))
    _assert_json_same(three)
    assert "forged" not in path.read_text(errors="replace")
