"""The OTLP messages the gateway reads and writes, as protobuf classes built from
descriptors declared here (no protoc step, no generated code to keep in step).

The request is read through a *wire-compatible view* of `ExportLogsServiceRequest`
(opentelemetry-proto, `collector/logs/v1/logs_service.proto`), not its generated
classes: every `repeated KeyValue attributes` is declared `map<string, bytes>`. A
protobuf map field is, on the wire, exactly a repeated message of `key = 1` and
`value = 2` (the protobuf language guide says so), which is what `KeyValue` is; the
value, an `AnyValue` message, is read as its raw bytes, and the common values (short
strings, small integers) are decoded from those bytes by `values.py` without making a
Python object per attribute and per value. Walking the generated classes cost about
twice as much per record (`make bench-protocols` prints both). Fields left out of the
view (dropped counts, flags, schema URLs) are skipped by the parser as unknown fields.

The answers (`ExportLogsServiceResponse`, `google.rpc.Status`) are declared with their
real field numbers and types.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_OPTIONAL, _REPEATED = _F.LABEL_OPTIONAL, _F.LABEL_REPEATED
_PACKAGE = "minisource.otlp"

# name → (field name, number, type, repeated, message type name or None)
_Field = tuple[str, int, int, bool, str | None]
_MAP = "map"  # a `map<string, bytes>` field (a repeated KeyValue on the wire)

_MESSAGES: dict[str, list[_Field | tuple[str, int, str]]] = {
    # opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest
    "LogsRequest": [("resource_logs", 1, _F.TYPE_MESSAGE, True, "ResourceLogs")],
    # opentelemetry.proto.logs.v1.ResourceLogs; the Resource raw: the same resource
    # comes with every export of a process, so it is read once (decoding.py).
    "ResourceLogs": [
        ("resource", 1, _F.TYPE_BYTES, False, None),
        ("scope_logs", 2, _F.TYPE_MESSAGE, True, "ScopeLogs"),
    ],
    # opentelemetry.proto.resource.v1.Resource
    "Resource": [("attributes", 1, _MAP)],
    # opentelemetry.proto.logs.v1.ScopeLogs
    "ScopeLogs": [
        ("scope", 1, _F.TYPE_MESSAGE, False, "Scope"),
        ("log_records", 2, _F.TYPE_MESSAGE, True, "LogRecord"),
    ],
    # opentelemetry.proto.common.v1.InstrumentationScope
    "Scope": [("name", 1, _F.TYPE_STRING, False, None)],
    # opentelemetry.proto.logs.v1.LogRecord
    "LogRecord": [
        ("time_unix_nano", 1, _F.TYPE_FIXED64, False, None),
        # An enum on the wire is a varint, as int32 is: unknown numbers stay readable.
        ("severity_number", 2, _F.TYPE_INT32, False, None),
        ("severity_text", 3, _F.TYPE_STRING, False, None),
        ("body", 5, _F.TYPE_BYTES, False, None),  # an AnyValue, raw
        ("attributes", 6, _MAP),
        ("dropped_attributes_count", 7, _F.TYPE_UINT32, False, None),
        ("trace_id", 9, _F.TYPE_BYTES, False, None),
        ("span_id", 10, _F.TYPE_BYTES, False, None),
        ("observed_time_unix_nano", 11, _F.TYPE_FIXED64, False, None),
        ("event_name", 12, _F.TYPE_STRING, False, None),
    ],
    # opentelemetry.proto.common.v1.AnyValue, for the values the fast path leaves: its
    # array and key-value list hold raw AnyValues again.
    "AnyValue": [
        ("string_value", 1, _F.TYPE_STRING, False, None),
        ("bool_value", 2, _F.TYPE_BOOL, False, None),
        ("int_value", 3, _F.TYPE_INT64, False, None),
        ("double_value", 4, _F.TYPE_DOUBLE, False, None),
        ("array_value", 5, _F.TYPE_MESSAGE, False, "ArrayValue"),
        ("kvlist_value", 6, _F.TYPE_MESSAGE, False, "KeyValueList"),
        ("bytes_value", 7, _F.TYPE_BYTES, False, None),
    ],
    "ArrayValue": [("values", 1, _F.TYPE_BYTES, True, None)],
    # A list, not a map: a structured body's JSON text keeps its keys' order.
    "KeyValueList": [("values", 1, _F.TYPE_MESSAGE, True, "KeyValue")],
    "KeyValue": [
        ("key", 1, _F.TYPE_STRING, False, None),
        ("value", 2, _F.TYPE_BYTES, False, None),
    ],
    # opentelemetry.proto.collector.logs.v1.ExportLogsServiceResponse
    "LogsResponse": [("partial_success", 1, _F.TYPE_MESSAGE, False, "PartialSuccess")],
    # opentelemetry.proto.collector.logs.v1.ExportLogsPartialSuccess
    "PartialSuccess": [
        ("rejected_log_records", 1, _F.TYPE_INT64, False, None),
        ("error_message", 2, _F.TYPE_STRING, False, None),
    ],
    # google.rpc.Status (details, a repeated Any, is never sent)
    "Status": [
        ("code", 1, _F.TYPE_INT32, False, None),
        ("message", 2, _F.TYPE_STRING, False, None),
    ],
}

# AnyValue's oneof: the fields WhichOneof names.
ANY_VALUE_ONEOF = "value"


def _build() -> dict[str, Any]:
    file = descriptor_pb2.FileDescriptorProto(
        name="minisource_otlp_view.proto", package=_PACKAGE, syntax="proto3"
    )
    for name, fields in _MESSAGES.items():
        message = file.message_type.add(name=name)
        for spec in fields:
            if spec[2] == _MAP:
                field_name, number = spec[0], spec[1]
                entry = message.nested_type.add(name=f"{field_name.title()}Entry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_OPTIONAL)
                entry.field.add(name="value", number=2, type=_F.TYPE_BYTES, label=_OPTIONAL)
                message.field.add(
                    name=field_name,
                    number=number,
                    type=_F.TYPE_MESSAGE,
                    label=_REPEATED,
                    type_name=f".{_PACKAGE}.{name}.{entry.name}",
                )
                continue
            field_name, number, kind, repeated, type_name = spec  # type: ignore[misc]
            added = message.field.add(
                name=field_name,
                number=number,
                type=kind,
                label=_REPEATED if repeated else _OPTIONAL,
            )
            if type_name:
                added.type_name = f".{_PACKAGE}.{type_name}"
        if name == "AnyValue":
            message.oneof_decl.add(name=ANY_VALUE_ONEOF)
            for added in message.field:
                added.oneof_index = 0
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}"))
        for name in _MESSAGES
    }


_CLASSES = _build()
LogsRequest: Any = _CLASSES["LogsRequest"]
Resource: Any = _CLASSES["Resource"]
AnyValue: Any = _CLASSES["AnyValue"]
LogsResponse: Any = _CLASSES["LogsResponse"]
Status: Any = _CLASSES["Status"]
