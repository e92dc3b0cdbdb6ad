"""Loki's push message, `logproto.PushRequest`, as the protobuf runtime's classes.

The messages of Loki's `pkg/push/push.proto` that a push carries, declared here field
by field (same names, numbers and types; gogoproto options only shape Go code and are
left out):

    message PushRequest     { repeated StreamAdapter streams = 1; }
    message StreamAdapter   { string labels = 1; repeated EntryAdapter entries = 2;
                              uint64 hash = 3; }
    message EntryAdapter    { google.protobuf.Timestamp timestamp = 1; string line = 2;
                              repeated LabelPairAdapter structuredMetadata = 3; }
    message LabelPairAdapter { string name = 1; string value = 2; }
    message Timestamp       { int64 seconds = 1; int32 nanos = 2; }  // the well-known type

Why a descriptor built at import rather than a committed `push_pb2.py` from protoc: the
generated module is this same descriptor, serialized, plus a check that ties it to the
protobuf runtime's major version (regenerate on every major upgrade, with grpcio-tools
at dev time); declared here it is readable, needs no code generator, and is parsed by
the same C parser (upb) at the same speed. Timestamp is declared in Loki's package
rather than imported: its wire form is the well-known type's, and a private pool keeps
these names out of the default pool that OpenTelemetry's classes live in.

Fields a client never sends (`PushRequest.format`, `EntryAdapter.parsed`) are not
declared: the parser skips unknown fields.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED


def _message(
    file: descriptor_pb2.FileDescriptorProto,
    name: str,
    *fields: tuple[str, int, int, int, str],
) -> None:
    message = file.message_type.add(name=name)
    for field_name, number, kind, label, type_name in fields:
        field = message.field.add(name=field_name, number=number, type=kind, label=label)
        if type_name:  # set only for message fields: the descriptor checks its presence
            field.type_name = type_name


def _file() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="minisource/loki/push.proto", package="logproto", syntax="proto3"
    )
    _message(
        file,
        "Timestamp",
        ("seconds", 1, _F.TYPE_INT64, _OPTIONAL, ""),
        ("nanos", 2, _F.TYPE_INT32, _OPTIONAL, ""),
    )
    _message(
        file,
        "LabelPairAdapter",
        ("name", 1, _F.TYPE_STRING, _OPTIONAL, ""),
        ("value", 2, _F.TYPE_STRING, _OPTIONAL, ""),
    )
    _message(
        file,
        "EntryAdapter",
        ("timestamp", 1, _F.TYPE_MESSAGE, _OPTIONAL, ".logproto.Timestamp"),
        ("line", 2, _F.TYPE_STRING, _OPTIONAL, ""),
        ("structuredMetadata", 3, _F.TYPE_MESSAGE, _REPEATED, ".logproto.LabelPairAdapter"),
    )
    _message(
        file,
        "StreamAdapter",
        ("labels", 1, _F.TYPE_STRING, _OPTIONAL, ""),
        ("entries", 2, _F.TYPE_MESSAGE, _REPEATED, ".logproto.EntryAdapter"),
        ("hash", 3, _F.TYPE_UINT64, _OPTIONAL, ""),
    )
    _message(
        file,
        "PushRequest",
        ("streams", 1, _F.TYPE_MESSAGE, _REPEATED, ".logproto.StreamAdapter"),
    )
    return file


_pool = descriptor_pool.DescriptorPool()
_pool.Add(_file())

# The classes are made at run time, so their attributes are unknown to mypy: Any.
PushRequest: Any = message_factory.GetMessageClass(
    _pool.FindMessageTypeByName("logproto.PushRequest")
)
