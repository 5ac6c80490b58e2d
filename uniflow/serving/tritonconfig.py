"""What a Triton ``config.pbtxt`` says about a model: its platform and the data type and
shape of each input and output, read from the ONNX graph (the ``onnx`` package, extra
``triton``) or recorded at register (``params={"triton": {"input": [...], "output": [...]}}``),
and the text rendering of it.

Only a tensor's element type and shape are read from the graph (``onnx.load`` with
``load_external_data=False``: weights stored beside the model are never read).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._errors import UsageError

__all__ = ["ONNX", "TORCHSCRIPT", "TensorSpec", "onnx_tensors", "recorded_tensors", "render_config"]

ONNX = "onnxruntime_onnx"
TORCHSCRIPT = "pytorch_libtorch"

#: ONNX ``TensorProto.DataType`` numbers -> Triton data types (the ones Triton has)
_ONNX_TYPES = {
    1: "TYPE_FP32",
    2: "TYPE_UINT8",
    3: "TYPE_INT8",
    4: "TYPE_UINT16",
    5: "TYPE_INT16",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    8: "TYPE_STRING",
    9: "TYPE_BOOL",
    10: "TYPE_FP16",
    11: "TYPE_FP64",
    12: "TYPE_UINT32",
    13: "TYPE_UINT64",
    16: "TYPE_BF16",
}
TRITON_TYPES = frozenset(_ONNX_TYPES.values())
_MAX_TENSORS = 1024
_MAX_RANK = 64
_MAX_DIM = (1 << 63) - 1
_NAME_RE = re.compile(r"[^\x00-\x1f\x7f]{1,256}")


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, Triton data type and dims (``-1``: any size)."""

    name: str
    data_type: str
    dims: tuple[int, ...]


def _need_onnx() -> Any:
    try:
        import onnx
    except ImportError as exc:
        raise UsageError(
            "reading the inputs and outputs of an ONNX model for Triton needs the onnx package: "
            "pip install 'uniflow-registry[triton]'"
        ) from exc
    return onnx


def _onnx_tensor(value_info: Any, where: str) -> TensorSpec:
    """The :class:`TensorSpec` of one graph input or output (``ValueInfoProto``)."""
    name = str(value_info.name)
    if value_info.type.WhichOneof("value") != "tensor_type":
        raise UsageError(f"{where} {name!r} is not a tensor; Triton's ONNX backend serves tensors only")
    tensor = value_info.type.tensor_type
    data_type = _ONNX_TYPES.get(int(tensor.elem_type))
    if data_type is None:
        raise UsageError(f"{where} {name!r} has ONNX element type {tensor.elem_type}, which Triton has not")
    if not tensor.HasField("shape"):
        raise UsageError(f"{where} {name!r} has no shape in the ONNX graph; Triton needs each tensor's rank")
    dims = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
    return _checked(TensorSpec(name, data_type, dims), where)


def onnx_tensors(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The inputs (initializers excluded) and outputs of the ONNX model at ``path``."""
    onnx = _need_onnx()
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: the file is not ONNX
        raise UsageError(f"{path.name} is not a readable ONNX model ({type(exc).__name__})") from exc
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    inputs = [_onnx_tensor(vi, "input") for vi in graph.input if vi.name not in weights]
    outputs = [_onnx_tensor(vi, "output") for vi in graph.output]
    if not inputs or not outputs or len(inputs) + len(outputs) > _MAX_TENSORS:
        raise UsageError(f"{path.name}: Triton needs 1 to {_MAX_TENSORS} inputs and outputs in all")
    return inputs, outputs


def _checked(spec: TensorSpec, where: str) -> TensorSpec:
    if not _NAME_RE.fullmatch(spec.name):
        raise UsageError(f"{where} name {spec.name[:80]!r} is empty, too long or has control characters")
    if len(spec.dims) > _MAX_RANK:
        raise UsageError(f"{where} {spec.name!r} has rank {len(spec.dims)}; at most {_MAX_RANK}")
    if any(d < -1 or d > _MAX_DIM for d in spec.dims):
        raise UsageError(f"{where} {spec.name!r} has a dimension out of range: {list(spec.dims)}")
    return spec


def _recorded_one(item: object, where: str) -> TensorSpec:
    if not isinstance(item, Mapping) or set(item) - {"name", "data_type", "dims"}:
        raise UsageError(f"params['triton'] {where}: expected {{'name', 'data_type', 'dims'}}")
    name, data_type, dims = item.get("name"), item.get("data_type"), item.get("dims")
    if not isinstance(name, str) or data_type not in TRITON_TYPES:
        raise UsageError(
            f"params['triton'] {where}: a name and a data_type such as TYPE_FP32 "
            f"(one of {', '.join(sorted(TRITON_TYPES))})"
        )
    if not isinstance(dims, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in dims):
        raise UsageError(f"params['triton'] {where} {name!r}: dims must be a list of whole numbers")
    return _checked(TensorSpec(name, str(data_type), tuple(dims)), f"params['triton'] {where}")


def recorded_tensors(params: Mapping[str, Any]) -> tuple[list[TensorSpec], list[TensorSpec]] | None:
    """The inputs and outputs recorded at register in ``params["triton"]``, or None if none are."""
    spec = params.get("triton")
    if spec is None:
        return None
    if not isinstance(spec, Mapping) or set(spec) != {"input", "output"}:
        raise UsageError("params['triton'] must be {'input': [...], 'output': [...]}")
    sides = []
    for side in ("input", "output"):
        items = spec[side]
        if not isinstance(items, list) or not 0 < len(items) <= _MAX_TENSORS:
            raise UsageError(f"params['triton'] {side}: a list of 1 to {_MAX_TENSORS} tensors")
        sides.append([_recorded_one(item, side) for item in items])
    return sides[0], sides[1]


def _quote(text: str) -> str:
    """A protobuf text-format string literal (backslash escapes, non-ASCII as UTF-8 octal)."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif 32 <= byte < 127:
            out.append(ch)
        else:
            out.append(f"\\{byte:03o}")
    return '"' + "".join(out) + '"'


def _tensors(kind: str, specs: list[TensorSpec]) -> list[str]:
    lines = [f"{kind} ["]
    for i, spec in enumerate(specs):
        # a scalar is a 1-element tensor to Triton, reshaped to rank 0 for the model
        dims = ", ".join(map(str, spec.dims or (1,)))
        reshape = ["    reshape: { shape: [ ] }"] if not spec.dims else []
        tail = "," if i < len(specs) - 1 else ""
        lines += [
            "  {",
            f"    name: {_quote(spec.name)}",
            f"    data_type: {spec.data_type}",
            f"    dims: [ {dims} ]",
            *reshape,
            "  }" + tail,
        ]
    return [*lines, "]"]


def render_config(
    name: str,
    platform: str,
    number: int,
    tensors: tuple[list[TensorSpec], list[TensorSpec]],
    comment: str,
) -> bytes:
    """The ``config.pbtxt`` of model ``name``: ``platform``, no batching (``max_batch_size:
    0``: dims are whole shapes), only version ``number`` served, and the tensors."""
    lines = [
        f"# {comment}",
        f"name: {_quote(name)}",
        f"platform: {_quote(platform)}",
        "max_batch_size: 0",
        f"version_policy: {{ specific: {{ versions: [ {number} ] }} }}",
        *_tensors("input", tensors[0]),
        *_tensors("output", tensors[1]),
    ]
    return ("\n".join(lines) + "\n").encode("utf-8")
