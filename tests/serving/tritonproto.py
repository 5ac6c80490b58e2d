"""The part of Triton's ``ModelConfig`` message (``model_config.proto`` of
triton-inference-server/common: same package, names and field numbers) that a config
written by ``uniflow get --layout triton`` uses, built as a protobuf descriptor, so a test
parses ``config.pbtxt`` with protobuf's own text-format parser: an unknown field, a wrong
type or a syntax error fails the parse, as it fails Triton's."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

_F = descriptor_pb2.FieldDescriptorProto
#: Triton's ``DataType`` enum, in the order of its numbers (0 ... 14)
DATA_TYPES = (
    ("TYPE_INVALID BOOL UINT8 UINT16 UINT32 UINT64 INT8 INT16 INT32 INT64 FP16 FP32 FP64 STRING BF16")
    .replace(" ", " TYPE_")
    .split()
)


def _field(
    msg: Any, name: str, number: int, kind: int, *, repeated: bool = False, type_name: str = ""
) -> Any:
    label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    field = msg.field.add(name=name, number=number, type=kind, label=label)
    if type_name:
        field.type_name = type_name
    return field


def _file() -> descriptor_pb2.FileDescriptorProto:
    f = descriptor_pb2.FileDescriptorProto(name="uniflow_tests_model_config.proto", package="inference")
    f.syntax = "proto3"
    enum = f.enum_type.add(name="DataType")
    for number, name in enumerate(DATA_TYPES):
        enum.value.add(name=name, number=number)
    reshape = f.message_type.add(name="ModelTensorReshape")
    _field(reshape, "shape", 1, _F.TYPE_INT64, repeated=True)
    for kind, dims in (("ModelInput", 4), ("ModelOutput", 3)):
        m = f.message_type.add(name=kind)
        _field(m, "name", 1, _F.TYPE_STRING)
        _field(m, "data_type", 2, _F.TYPE_ENUM, type_name=".inference.DataType")
        _field(m, "dims", dims, _F.TYPE_INT64, repeated=True)
        _field(m, "reshape", 5, _F.TYPE_MESSAGE, type_name=".inference.ModelTensorReshape")
    policy = f.message_type.add(name="ModelVersionPolicy")
    _field(policy.nested_type.add(name="Latest"), "num_versions", 1, _F.TYPE_UINT32)
    policy.nested_type.add(name="All")
    _field(policy.nested_type.add(name="Specific"), "versions", 1, _F.TYPE_INT64, repeated=True)
    policy.oneof_decl.add(name="policy_choice")
    for number, name in ((1, "Latest"), (2, "All"), (3, "Specific")):
        field = _field(
            policy, name.lower(), number, _F.TYPE_MESSAGE, type_name=f".inference.ModelVersionPolicy.{name}"
        )
        field.oneof_index = 0
    config = f.message_type.add(name="ModelConfig")
    _field(config, "name", 1, _F.TYPE_STRING)
    _field(config, "platform", 2, _F.TYPE_STRING)
    _field(config, "version_policy", 3, _F.TYPE_MESSAGE, type_name=".inference.ModelVersionPolicy")
    _field(config, "max_batch_size", 4, _F.TYPE_INT32)
    _field(config, "input", 5, _F.TYPE_MESSAGE, repeated=True, type_name=".inference.ModelInput")
    _field(config, "output", 6, _F.TYPE_MESSAGE, repeated=True, type_name=".inference.ModelOutput")
    return f


def parse_config(text: str) -> Any:
    """``config.pbtxt`` parsed as Triton's ``inference.ModelConfig`` (the subset above)."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file())
    cls = message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))
    return text_format.Parse(text, cls())
