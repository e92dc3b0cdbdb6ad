"""The OTLP answers the gateway writes in protobuf, as protobuf classes built from
descriptors declared here (no protoc step, no generated code to keep in step):
`ExportLogsServiceResponse` and `google.rpc.Status`, with their real field numbers and
types.

Requests are not read with these classes: the C reader (services/gateway/wire/) walks
their wire format straight into Python values.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL = _F.LABEL_OPTIONAL
_PACKAGE = "minisource.otlp"

# message → its fields: (name, number, type, message type name or None)
_MESSAGES: dict[str, list[tuple[str, int, int, str | None]]] = {
    # opentelemetry.proto.collector.logs.v1.ExportLogsServiceResponse
    "LogsResponse": [("partial_success", 1, _F.TYPE_MESSAGE, "PartialSuccess")],
    # opentelemetry.proto.collector.logs.v1.ExportLogsPartialSuccess
    "PartialSuccess": [
        ("rejected_log_records", 1, _F.TYPE_INT64, None),
        ("error_message", 2, _F.TYPE_STRING, None),
    ],
    # google.rpc.Status (details, a repeated Any, is never sent)
    "Status": [
        ("code", 1, _F.TYPE_INT32, None),
        ("message", 2, _F.TYPE_STRING, None),
    ],
}


def _build() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(
        name="minisource_otlp_answers.proto", package=_PACKAGE, syntax="proto3"
    )
    for name, fields in _MESSAGES.items():
        message = file.message_type.add(name=name)
        for field_name, number, kind, type_name in fields:
            added = message.field.add(name=field_name, number=number, type=kind, label=_OPTIONAL)
            if type_name:
                added.type_name = f".{_PACKAGE}.{type_name}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in _MESSAGES
    }


_CLASSES = _build()
LogsResponse: Any = _CLASSES["LogsResponse"]
Status: Any = _CLASSES["Status"]
