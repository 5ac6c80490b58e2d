"""Property tests of the read gate (issue 9): arbitrary msgpack and JSON into manifest,
state and event unpacking. Nothing but a :class:`UniflowError` ever comes out, and what is
accepted satisfies the invariants readers rely on (checked here independently)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import blake3
import msgpack
from hypothesis import example, given, settings
from hypothesis import strategies as st

from uniflow import UniflowError

SETTINGS = settings(max_examples=300, deadline=None)

_VERSION = re.compile(r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?")
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,127}")
_STAGE = re.compile(r"[a-z][a-z0-9_-]{0,63}")
_HEX = re.compile(r"[0-9a-f]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

# ----------------------------------------------------------------------------- strategies
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=40)
)
msgpack_values = st.recursive(
    _scalars,
    lambda kids: (
        st.lists(kids, max_size=5)
        | st.dictionaries(st.text(max_size=10) | st.integers(-(2**63), 2**64 - 1), kids, max_size=5)
    ),
    max_leaves=30,
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=10), kids, max_size=5),
    max_leaves=30,
)


def _chunk(i: int) -> bytes:
    return blake3.blake3(bytes([i])).digest()


def _valid_manifest() -> dict[str, Any]:
    from uniflow._records.manifest import content_digest

    files = [
        {
            "path": "a.bin",
            "size": 300_000,
            "mode": 0o644,
            "digest": "1" * 64,
            "chunks": [[_chunk(1), 262_144], [_chunk(2), 37_856]],
        },
        {"path": "b/c.txt", "size": 10, "mode": 0o755, "digest": "2" * 64, "chunks": [[_chunk(3), 10]]},
        {"path": "empty", "size": 0, "mode": 0o644, "digest": "3" * 64, "chunks": []},
    ]
    return {
        "format": 1,
        "name": "m",
        "version": "v1.0.0",
        "created_at": "2024-01-01T00:00:00+00:00",
        "author": "A <a@b>",
        "framework": "files",
        "serializer": "files",
        "serializer_meta": {"kind": "dir"},
        "files": files,
        "content_digest": content_digest(files),
        "metrics": {"acc": 0.9},
        "params": {},
        "tags": {"k": "v"},
        "description": "",
        "lineage": {"code_commit": "a" * 40, "branch": "main", "dirty": False},
        "libraries": {"python": "3.11"},
    }


def _valid_manifest_v2() -> dict[str, Any]:
    """Format 2: the same files, ``a.bin`` holding three tensors (one of them empty)."""
    from uniflow._records.manifest import content_digest

    m = _valid_manifest()
    m["format"] = 2
    m["files"][0]["tensors"] = [
        ["w", "F32", [10, 10], 8, 408, "4" * 64],
        ["b", "BF16", [4], 408, 416, "5" * 64],
        ["e", "I8", [0, 3], 416, 416, "6" * 64],
    ]
    m["content_digest"] = content_digest(m["files"])
    return m


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into a nested dict/list structure."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            out += _paths(v, prefix + (i,))
    return out


@st.composite
def mutated(draw: Any, base: Any, values: Any) -> Any:
    """``base`` with one to three places replaced by an arbitrary value, or deleted."""
    import copy

    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(values)
    return doc


# ----------------------------------------------------------------------------- manifests
def _assert_well_formed_manifest(record: Any) -> None:
    from uniflow._records.manifest import Manifest, file_records, to_model_version

    assert isinstance(record, Manifest)
    m = record.to_dict()  # what the bytes hold, checked independently of uniflow
    assert isinstance(m, dict) and type(m["format"]) is int and m["format"] in (1, 2)
    assert (
        _NAME.fullmatch(m["name"])
        and _VERSION.fullmatch(m["version"])
        and _HEX.fullmatch(m["content_digest"])
    )
    paths = [f["path"] for f in m["files"]]
    assert len(set(paths)) == len(paths)
    for p in paths:
        parts = p.split("/")
        assert not p.startswith("/") and "\\" not in p and not _CONTROL.search(p)
        assert all(part not in ("", ".", "..", ".git", ".uniflow") for part in parts)
        assert not any(q.startswith(p + "/") for q in paths)
    for f in m["files"]:
        assert f["mode"] in (0o644, 0o755) and _HEX.fullmatch(f["digest"])
        sizes = [c[1] for c in f["chunks"]]
        assert all(isinstance(c[0], bytes) and len(c[0]) == 32 for c in f["chunks"])
        assert all(isinstance(n, int) and n >= 1 for n in sizes) and sum(sizes) == f["size"]
        if "tensors" in f:
            _assert_well_formed_tensors(f["tensors"], f["size"])
            assert m["format"] == 2
    assert [f.tensors is not None for f in record.files] == ["tensors" in f for f in m["files"]]
    mv = to_model_version(record, "development")
    file_records(record)
    from uniflow._ops.diff import diff_manifests

    json.dumps(diff_manifests(record, record).to_dict(), allow_nan=False)  # anything accepted can be diffed
    json.dumps(diff_manifests(Manifest.from_dict(_VALID_MANIFEST_V2), record).to_dict(), allow_nan=False)
    str(diff_manifests(record, Manifest.from_dict(_VALID_MANIFEST)))
    from uniflow._jsonable import to_jsonable

    json.dumps(to_jsonable(mv.to_dict()), allow_nan=False)


_ITEMSIZE = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E4M3": 1,
    "F8_E4M3FNUZ": 1,
    "F8_E5M2": 1,
    "F8_E5M2FNUZ": 1,
    "F8_E8M0": 1,
    "U16": 2,
    "I16": 2,
    "F16": 2,
    "BF16": 2,
    "U32": 4,
    "I32": 4,
    "F32": 4,
    "U64": 8,
    "I64": 8,
    "F64": 8,
    "C64": 8,
}


def _assert_well_formed_tensors(tensors: Any, size: int) -> None:
    """What the diff and the partial reader rely on, checked independently of uniflow."""
    assert isinstance(tensors, list)
    names = [t[0] for t in tensors]
    assert len(set(names)) == len(names)
    spans = []
    for t in tensors:
        assert isinstance(t, list) and len(t) == 6
        name, dtype, shape, begin, end, digest = t
        assert (
            isinstance(name, str)
            and 0 < len(name) <= 1024
            and not _CONTROL.search(name)
            and name.isprintable()
        )
        assert dtype in _ITEMSIZE and isinstance(shape, list) and len(shape) <= 64
        assert all(type(d) is int and d >= 0 for d in shape)
        assert type(begin) is int and type(end) is int and 0 <= begin <= end <= size
        count = 1
        for d in shape:
            count *= d
        assert end - begin == count * _ITEMSIZE[dtype]
        assert isinstance(digest, str) and _HEX.fullmatch(digest)
        spans.append((begin, end))
    spans.sort()
    assert all(b1 >= e0 for (_, e0), (b1, _) in zip(spans, spans[1:], strict=False))


def _unpack_both_ways(data: bytes) -> tuple[Any, Any]:
    """``unpack`` as configured, and with the header pre-scan forced on (it normally runs
    only on manifests over 1 MiB): each result is the manifest or the UniflowError raised."""
    from uniflow._records import manifest as _manifest

    out = []
    saved = getattr(_manifest, "_PRESCAN_FROM", None)
    for threshold in (saved, 0):
        if saved is not None:
            _manifest._PRESCAN_FROM = threshold
        try:
            out.append(_manifest.unpack(data, "model 'm' version 'v1.0.0'"))
        except UniflowError as exc:
            out.append(exc)
        finally:
            if saved is not None:
                _manifest._PRESCAN_FROM = saved
    return out[0], out[1]


def _try_manifest(data: bytes) -> None:
    plain, prescanned = _unpack_both_ways(data)
    assert isinstance(plain, UniflowError) == isinstance(prescanned, UniflowError)
    if not isinstance(plain, UniflowError):
        assert plain == prescanned
        _assert_well_formed_manifest(plain)


_VALID_MANIFEST = _valid_manifest()
_VALID_MANIFEST_V2 = _valid_manifest_v2()


@SETTINGS
@given(
    st.binary(max_size=2000)
    | msgpack_values.map(lambda v: msgpack.packb(v, use_bin_type=True))
    | mutated(_VALID_MANIFEST, msgpack_values).map(lambda v: msgpack.packb(v, use_bin_type=True))
)
@example(b"\xdd\xff\xff\xff\xff")  # an array header claiming 4 billion entries
@example(b"\x91" * 5000)  # deep nesting
@example(msgpack.packb(_VALID_MANIFEST, use_bin_type=True))
def test_manifest_unpacking_raises_only_uniflow_errors(data: bytes) -> None:
    """Arbitrary bytes, arbitrary msgpack structures and valid manifests with one to three
    places replaced or deleted: unpack raises IntegrityError or returns a manifest that
    satisfies every invariant readers rely on."""
    _try_manifest(data)


def test_the_unmutated_manifest_is_accepted() -> None:
    """The seed of the mutations is valid, so the property above is not vacuous."""
    from uniflow._records.manifest import unpack

    _assert_well_formed_manifest(unpack(msgpack.packb(_VALID_MANIFEST, use_bin_type=True)))
    _assert_well_formed_manifest(unpack(msgpack.packb(_VALID_MANIFEST_V2, use_bin_type=True)))


_tensor_values = (
    msgpack_values
    | st.integers(-10, 500)
    | st.sampled_from(["F32", "BF16", "I8", "F4", "f32", "", "\n"])
    | st.lists(st.integers(-2, 2**63), max_size=70)
    | st.text(alphabet="0123456789abcdefABCDEF", min_size=62, max_size=66)
)


@SETTINGS
@given(mutated(_VALID_MANIFEST_V2, _tensor_values).map(lambda v: msgpack.packb(v, use_bin_type=True)))
@example(msgpack.packb(_VALID_MANIFEST_V2, use_bin_type=True))
def test_format_2_manifest_unpacking_raises_only_uniflow_errors(data: bytes) -> None:
    """Format-2 manifests (tensor lists) with one to three places replaced or deleted, the
    replacements biased towards near-valid tensor fields: IntegrityError, or a manifest whose
    tensor lists satisfy every invariant the diff and the partial reader rely on."""
    _try_manifest(data)


# ----------------------------------------------------------------------------- states
_TABLE = {
    "development": False,
    "staging": True,
    "production": True,
    "archived": False,
    "canary": True,
    "shadow": False,
}
_VALID_STATE = {
    "format": 1,
    "model": "m",
    "seq": 7,
    "stage_of": {"v1.0.0": "production", "v1.1.0": "archived", "v2.0.0-rc.1": "shadow", "v2.0.0": "shadow"},
    "past": {"production": ["v0.9.0"], "canary": []},
}


def _try_state(data: bytes, declared: bool) -> None:
    from uniflow._records.lifecycle import PAST_LIMIT, LifecycleState

    try:
        state = (
            LifecycleState.from_json(data, "m", stages=_TABLE)
            if declared
            else LifecycleState.from_json(data, "m")
        )
    except UniflowError:
        return
    assert isinstance(state.seq, int) and not isinstance(state.seq, bool) and state.seq >= 0
    held: dict[str, int] = {}
    for version, stage in state.stage_of.items():
        assert _VERSION.fullmatch(version) and isinstance(stage, str) and _STAGE.fullmatch(stage)
        assert not stage.endswith(".lock") and ".." not in stage
        if declared:
            assert stage in _TABLE
        held[stage] = held.get(stage, 0) + 1
    for stage, n in held.items():
        single = _TABLE.get(stage, True) if stage not in ("development", "archived") else False
        assert n <= 1 or not single, (stage, n)
    for stage, versions in state.past.items():
        assert _STAGE.fullmatch(stage) and len(versions) <= PAST_LIMIT
        assert all(isinstance(v, str) and _VERSION.fullmatch(v) for v in versions)


@SETTINGS
@given(
    st.binary(max_size=500)
    | (json_values | mutated(_VALID_STATE, json_values)).map(lambda v: json.dumps(v).encode()),
    st.booleans(),
)
@example(b"[" * 100_000, False)
@example(b'{"seq": 1e999, "stage_of": {}}', False)
@example(json.dumps(_VALID_STATE).encode(), True)
def test_state_unpacking_raises_only_uniflow_errors(data: bytes, declared: bool) -> None:
    """Arbitrary bytes, arbitrary JSON and mutated valid states into ``state.json`` parsing
    (with and without the stage table): IntegrityError, or a state readers can trust."""
    _try_state(data, declared)


# ----------------------------------------------------------------------------- events
_VALID_EVENT = {
    "action": "promote",
    "version": "v1.0.0",
    "from": "staging",
    "to": "production",
    "seq": 3,
    "displaced": "v0.9.0",
    "actor": "A <a@b>",
    "at": "2024-01-01T00:00:00+00:00",
    "reason": "good",
    "extra": {"k": [1, 2]},
}


def _try_event(data: bytes) -> None:
    from uniflow._records.lifecycle import EVENT_ACTIONS, parse_event

    try:
        ev = parse_event(data, "lifecycle commit 0123456789ab of model 'm'")
    except UniflowError:
        return
    assert ev.action in EVENT_ACTIONS and _VERSION.fullmatch(ev.version)
    assert isinstance(ev.seq, int) and ev.seq >= 0
    assert _STAGE.fullmatch(ev.to_stage) and (ev.from_stage is None or _STAGE.fullmatch(ev.from_stage))
    assert ev.displaced is None or _VERSION.fullmatch(ev.displaced)
    assert isinstance(ev.at, datetime)
    assert isinstance(ev.extra, dict) and isinstance(ev.actor or "", str)


@SETTINGS
@given(
    st.binary(max_size=500)
    | (json_values | mutated(_VALID_EVENT, json_values)).map(lambda v: json.dumps(v).encode())
)
@example(b"{" * 100_000)
@example(json.dumps(_VALID_EVENT).encode())
def test_event_unpacking_raises_only_uniflow_errors(data: bytes) -> None:
    """Arbitrary bytes, arbitrary JSON and mutated valid events into ``event.json`` parsing."""
    _try_event(data)
