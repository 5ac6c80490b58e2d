"""The header parsers register runs on every .safetensors/.npy file it stores: whatever the
bytes, they return tensor ranges the read gate accepts, or nothing; they never raise."""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from uniflow._records.tensors import check_tensors, scan_for

SETTINGS = settings(max_examples=300, deadline=None)

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=20,
)
_spec = st.fixed_dictionaries(
    {
        "dtype": st.sampled_from(["F32", "F16", "BF16", "I8", "BOOL", "F4", "Q8", ""]) | _json,
        "shape": st.lists(st.integers(-2, 40), max_size=4) | _json,
        "data_offsets": st.lists(st.integers(-8, 4000), min_size=2, max_size=2) | _json,
    }
)


def _safetensors(header: dict[str, Any], body: bytes, pad: int = 0) -> bytes:
    raw = json.dumps(header).encode() + b" " * pad
    return struct.pack("<Q", len(raw)) + raw + body


def _scan(path: str, data: bytes) -> None:
    scan = scan_for(path)
    assert scan is not None
    view = memoryview(data)
    ranges = scan(view)
    entries = scan.entries(["0" * 64] * len(ranges))
    if entries is None:
        assert list(ranges) == []
        return
    assert [(e[3], e[4]) for e in entries] == list(ranges)
    assert check_tensors(entries, len(data), path, len(entries)) == len(entries)


@SETTINGS
@given(st.dictionaries(st.text(max_size=10), _spec, max_size=5), st.binary(max_size=4000), st.integers(0, 7))
@example({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, b"\0" * 16, 0)
def test_safetensors_headers(header: dict[str, Any], body: bytes, pad: int) -> None:
    _scan("m.safetensors", _safetensors(header, body, pad))


@SETTINGS
@given(st.binary(max_size=300))
@example(struct.pack("<Q", 2**63) + b"{}")
@example(struct.pack("<Q", 3) + b"[1]")
def test_arbitrary_bytes_named_safetensors(data: bytes) -> None:
    _scan("m.safetensors", data)


def _npy(array: np.ndarray, fortran: bool = False) -> bytes:
    out = io.BytesIO()
    np.save(out, np.asfortranarray(array) if fortran else array, allow_pickle=False)
    return out.getvalue()


@SETTINGS
@given(
    st.sampled_from(["<f4", ">f4", "<i8", "|u1", "|b1", "<c8", "<f2", "<U3", "<M8[s]"]),
    st.lists(st.integers(0, 5), max_size=3),
    st.booleans(),
    st.integers(0, 200),
    st.binary(max_size=8),
)
def test_npy_headers(dtype: str, shape: list[int], fortran: bool, cut: int, junk: bytes) -> None:
    """Real .npy files of many dtypes and orders, truncated or with junk appended."""
    data = _npy(np.zeros(shape, dtype=dtype), fortran)
    _scan("a.npy", data)
    _scan("a.npy", data[: len(data) - cut] + junk)


@SETTINGS
@given(st.binary(max_size=300))
@example(b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f4'}\n")
@example(b"\x93NUMPY\x01\x00\x20\x00" + b"(" * 30 + b"\n")
def test_arbitrary_bytes_named_npy(data: bytes) -> None:
    _scan("a.npy", b"\x93NUMPY" + data if data[:1] == b"\x01" else data)


def test_a_valid_npy_is_scanned() -> None:
    data = _npy(np.arange(6, dtype=np.int64).reshape(2, 3))
    scan = scan_for("dir/weights.npy")
    assert scan is not None
    ((begin, end),) = scan(memoryview(data))
    assert data[begin:end] == np.arange(6, dtype=np.int64).tobytes()
    ((name, dtype, shape, *_),) = scan.entries(["0" * 64])
    assert (name, dtype, shape) == ("weights", "I64", [2, 3])
    assert scan_for("weights.bin") is None
