"""Loose objects read for lifecycle verification (``GitRepo.read_loose``, one read and one
inflate for a small object): every object still checked against its id, and a hostile loose
file refused with the same errors as before, bounded by the cap whatever its header says.
The event parser's JSON decoding reads every encoding ``json.loads`` reads."""

from __future__ import annotations

import hashlib
import json
import os
import zlib
from pathlib import Path

import pytest

from tests.helpers import make_repo
from uniflow._bounded import load_json
from uniflow._errors import IntegrityError
from uniflow._records.git import GitRepo
from uniflow._records.lifecycle import parse_event


def _plant(repo: GitRepo, stored: bytes, name: bytes | None = None, *, raw: bool = False) -> str:
    """Write ``stored`` (a header, NUL and body; deflated unless ``raw``) as a loose file
    named by the id of ``name`` (default: of ``stored`` itself); that id."""
    sha = hashlib.sha1(name if name is not None else stored).hexdigest()
    path = repo.git_dir / "objects" / sha[:2] / sha[2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        os.chmod(path, 0o644)
    path.write_bytes(stored if raw else zlib.compress(stored))
    return sha


@pytest.fixture
def repo(tmp_path: Path) -> GitRepo:
    return GitRepo(make_repo(tmp_path / "r"))


def test_objects_git_wrote_read_back_exactly(repo: GitRepo) -> None:
    small = repo.write_blob(b'{"action": "promote"}')
    big_body = os.urandom(300_000)  # more than one read of the file, more than one inflate
    big = repo.write_blob(big_body)
    tree = repo.write_tree({"event.json": (0o100644, small)})
    assert repo.read_loose(small, "blob", 1 << 20) == b'{"action": "promote"}'
    assert repo.read_loose(big, "blob", 1 << 20) == big_body
    assert repo.read_loose(tree, "tree", 1 << 20) == repo.read_raw(tree, "tree", 1 << 20)
    assert repo.read_loose("0" * 40, "blob", 1 << 20) is None  # not stored loose


def test_an_object_is_checked_against_its_id_and_kind(repo: GitRepo) -> None:
    blob = repo.write_blob(b"hello")
    with pytest.raises(IntegrityError, match="not a tree that hashes to its name"):
        repo.read_loose(blob, "tree", 1 << 20)
    other = _plant(repo, b"blob 5\0HELLO", name=b"blob 5\0hello!")  # bytes under another id
    with pytest.raises(IntegrityError, match="not a blob that hashes to its name"):
        repo.read_loose(other, "blob", 1 << 20)


def test_a_header_written_otherwise_is_judged_by_its_body(repo: GitRepo) -> None:
    """A stated size with a leading zero: the body is hashed with the canonical header, as
    before (the id is of ``blob 5``), so the same body reads the same."""
    sha = _plant(repo, b"blob 05\0hello", name=b"blob 5\0hello")
    assert repo.read_loose(sha, "blob", 1 << 20) == b"hello"


@pytest.mark.parametrize(
    ("stored", "why"),
    [
        (b"blob 9\0hello", "not the size its header states"),  # the header says more
        (b"blob 2\0hello", "not the size its header states"),  # the header says less
        (b"blob five\0hello", "not the size its header states"),
        (b"blob 5 hello", "not the size its header states"),  # no NUL at all
        (b"", "not the size its header states"),
    ],
)
def test_a_loose_object_that_lies_about_its_size_is_refused(repo: GitRepo, stored: bytes, why: str) -> None:
    sha = _plant(repo, stored, name=b"blob 5\0hello")
    with pytest.raises(IntegrityError, match=why):
        repo.read_loose(sha, "blob", 1 << 20)


def test_a_damaged_or_cut_stream_is_refused(repo: GitRepo) -> None:
    whole = zlib.compress(b"blob 5\0hello")
    cut = _plant(repo, whole[:-6], name=b"blob 5\0hello", raw=True)  # the stream ends early
    with pytest.raises(IntegrityError, match="not the size its header states"):
        repo.read_loose(cut, "blob", 1 << 20)
    junk = _plant(repo, b"not zlib at all", name=b"blob 5\0hello", raw=True)
    with pytest.raises(IntegrityError, match="is damaged"):
        repo.read_loose(junk, "blob", 1 << 20)


def test_an_object_over_the_cap_is_refused_without_inflating_it(repo: GitRepo) -> None:
    """A loose file whose header understates a large body: at most the cap is inflated."""
    z = zlib.compressobj(9)
    sha = _plant(repo, z.compress(b"blob 10\0") + z.compress(bytes(8 << 20)) + z.flush(), raw=True)
    with pytest.raises(IntegrityError, match="not the size its header states"):
        repo.read_loose(sha, "blob", 1 << 10)
    honest = repo.write_blob(bytes(4096))
    with pytest.raises(IntegrityError, match="not the size its header states"):
        repo.read_loose(honest, "blob", 1 << 10)  # 4,096 bytes under a cap of 1,024


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32"])
def test_event_json_decodes_as_json_loads_decodes_it(encoding: str) -> None:
    text = json.dumps({"action": "promote", "note": "caf\u00e9 \u2713", "n": [1, 2.5, None]})
    data = text.encode(encoding)
    assert load_json(data, "x", limit=1 << 20) == json.loads(data)
    assert load_json(bytearray(data), "x", limit=1 << 20) == json.loads(data)


@pytest.mark.parametrize("data", [b'{"a": NaN}', b'{"a": -Infinity}', b"\xff\xfe\xfd", b'{"a": 1', b"[1]x"])
def test_event_json_that_is_not_json_is_refused(data: bytes) -> None:
    with pytest.raises(IntegrityError, match="x is not valid JSON"):
        load_json(data, "x", limit=1 << 20)


def test_an_event_naming_an_overlong_or_odd_version_is_refused_each_time() -> None:
    """Version checks are kept per string: a bad one stays bad, a long one is refused."""
    event = {"action": "promote", "seq": 1, "at": "2026-01-01T00:00:00+00:00", "to": "production"}
    for version in ("v" + "1" * 200 + ".0.0", "v1.0", "v1.0.0.lock", 7, ["v1.0.0"]):
        for _ in range(2):
            data = json.dumps({**event, "version": version}).encode()
            with pytest.raises(IntegrityError, match="is not a version"):
                parse_event(data, "commit abc")
    assert parse_event(json.dumps({**event, "version": "v1.0.0"}).encode(), "c").version == "v1.0.0"
