"""Hostile manifests (format 3, as register writes them): tensor lists read from Git pass the
one gate (``_records.manifest`` with ``_records.tensors.check_tensors``) or are an
IntegrityError naming the version; a tensor list that is well formed but lies about the bytes
is caught by the partial reader."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from tests.adversarial._forge_git import forge_version, one_line_error
from tests.helpers import cli, write_config
from tests.tensors._util import tiny_lm
from uniflow import IntegrityError, ModelRegistry

_HEX = "ab" * 32


@pytest.fixture
def base(registry: ModelRegistry) -> dict[str, Any]:
    """A real version ``lm v1.0.0`` (format 3) (chunks stored); its manifest."""
    registry.register(tiny_lm(depth=1), "lm", version="v1.0.0")
    return copy.deepcopy(registry.repository.manifest("lm", "v1.0.0").to_dict())


def _forge(registry: ModelRegistry, m: dict[str, Any]) -> ModelRegistry:
    m = copy.deepcopy(m)
    m["version"] = "v2.0.0"
    forge_version(registry.root, "lm", "v2.0.0", m)
    return ModelRegistry(registry.root)


def _tensors(m: dict[str, Any]) -> list[list[Any]]:
    return m["files"][0]["tensors"]


def _set(i: int, field: int, value: Any):
    def edit(m: dict[str, Any]) -> None:
        _tensors(m)[i][field] = value

    return edit


def _overlap(m: dict[str, Any]) -> None:  # the second tensor in file order moved onto the first
    a, b = sorted(_tensors(m), key=lambda t: t[3])[:2]
    size = b[4] - b[3]
    b[3], b[4] = a[3], a[3] + size


def _past_end(m: dict[str, Any]) -> None:
    t = max(_tensors(m), key=lambda t: t[4])
    t[3] += 4
    t[4] += 4


def _duplicate(m: dict[str, Any]) -> None:
    _tensors(m)[1][0] = _tensors(m)[0][0]


def _too_many(m: dict[str, Any]) -> None:
    _tensors(m).extend([f"pad.{i}", "F32", [0], 0, 0, _HEX] for i in range(100))


HOSTILE = {
    "bytes do not fit dtype x shape": _set(0, 2, [1, 1]),
    "unknown dtype": _set(0, 1, "F128"),
    "dtype not a string": _set(0, 1, 4),
    "negative dimension": _set(0, 2, [-1, 256]),
    "boolean dimension": _set(0, 2, [True, 256]),
    "float dimension": _set(0, 2, [1.0, 256]),
    "too many dimensions": _set(0, 2, [1] * 65),
    "a huge dimension": _set(0, 2, [1 << 63, 0]),
    "shape not a list": _set(0, 2, "256x1024"),
    "begin after end": _set(0, 3, 10**12),
    "negative begin": _set(0, 3, -4),
    "boolean end": _set(0, 4, True),
    "range past the end of the file": _past_end,
    "overlapping ranges": _overlap,
    "digest in upper case": _set(0, 5, "AB" * 32),
    "digest as bytes": _set(0, 5, b"\xab" * 32),
    "short digest": _set(0, 5, "ab" * 31),
    "name with a newline": _set(0, 0, "head.weight\nUniflow-Stage: production"),
    "name with an escape sequence": _set(0, 0, "\x1b[2Jhead"),
    "empty name": _set(0, 0, ""),
    "name not a string": _set(0, 0, 7),
    "overlong name": _set(0, 0, "x" * 1025),
    "duplicate names": _duplicate,
    "entry of five fields": lambda m: _tensors(m)[0].pop(),
    "entry that is a map": lambda m: _tensors(m).__setitem__(0, {"name": "x"}),
    "tensors not a list": lambda m: m["files"][0].__setitem__("tensors", {"x": 1}),
    "tensor data in a format-1 manifest": lambda m: m.__setitem__("format", 1),
    "format 4 (a newer uniflow's)": lambda m: m.__setitem__("format", 4),
    "format 2.0": lambda m: m.__setitem__("format", 2.0),
    "format true": lambda m: m.__setitem__("format", True),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_tensor_lists_are_refused(registry: ModelRegistry, base: dict[str, Any], case: str) -> None:
    m = copy.deepcopy(base)
    HOSTILE[case](m)
    fresh = _forge(registry, m)
    for call in (
        lambda: fresh.get("lm", "v2.0.0"),
        lambda: fresh.diff("lm", "v1.0.0", "v2.0.0"),
        lambda: fresh.load("lm", "v2.0.0", tensors=["*"]),
    ):
        with pytest.raises(IntegrityError) as err:
            call()
        assert "v2.0.0" in str(err.value) and "\n" not in str(err.value)


def test_cli_diff_of_a_hostile_version_is_one_line_exit_5(
    registry: ModelRegistry, base: dict[str, Any]
) -> None:
    m = copy.deepcopy(base)
    _overlap(m)
    _forge(registry, m)
    line = one_line_error(cli(registry.root, "models", "diff", "lm", "v1.0.0", "v2.0.0", code=5).stderr)
    assert "v2.0.0" in line and "overlap" in line


def test_tensor_count_is_bounded_by_the_limits(registry: ModelRegistry, base: dict[str, Any]) -> None:
    m = copy.deepcopy(base)
    _too_many(m)
    fresh = _forge(registry, m)
    assert len(fresh.diff("lm", "v1.0.0", "v2.0.0").files[0].tensors) == len(_tensors(base)) + 100
    write_config(registry.root, "[limits]\nmax_chunks = 50\n")
    with pytest.raises(IntegrityError, match=r"more than max_chunks \(50\)"):
        ModelRegistry(registry.root).diff("lm", "v1.0.0", "v2.0.0")


def test_a_well_formed_list_that_lies_is_caught_by_the_reader(
    registry: ModelRegistry, base: dict[str, Any]
) -> None:
    """A forged digest, or a range pointing at another tensor's bytes of the same size:
    the diff believes the manifest (it reads no chunk), the partial load does not."""
    m = copy.deepcopy(base)
    head = next(t for t in _tensors(m) if t[0] == "head.weight")
    head[5] = _HEX
    fresh = _forge(registry, m)
    assert {
        t.name for f in fresh.diff("lm", "v1.0.0", "v2.0.0").files for t in f.tensors if t.status == "changed"
    } == {"head.weight"}
    with pytest.raises(IntegrityError, match=r"tensor 'head.weight' does not match its digest"):
        fresh.load("lm", "v2.0.0", tensors=["head.weight"])
    assert set(fresh.load("lm", "v2.0.0", tensors=["head.bias"])) == {"head.bias"}


def test_register_never_records_what_the_gate_would_refuse(registry: ModelRegistry, tmp_path: Path) -> None:
    """A .safetensors whose header the gate would refuse (a name with a newline, an
    unknown dtype) is stored as plain bytes: no tensor list, and a diff says so."""
    import json
    import struct

    def write(path: Path, header: dict[str, Any], data: bytes) -> None:
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)

    bad = tmp_path / "bad.safetensors"
    write(bad, {"a\nb": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 8)
    registry.register(str(bad), "odd", version="v1.0.0")
    write(bad, {"w": {"dtype": "F4", "shape": [2], "data_offsets": [0, 1]}}, b"\0")
    registry.register(str(bad), "odd", version="v1.1.0")
    for v in ("v1.0.0", "v1.1.0"):
        assert registry.repository.manifest("odd", v).files[0].tensors is None
    diff = registry.diff("odd", "v1.0.0", "v1.1.0")
    assert diff.files[0].tensors is None and diff.summary["line"].startswith("no tensor data")
