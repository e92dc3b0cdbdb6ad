"""The OTLP JSON mapping of `ExportLogsServiceRequest`, as msgspec structs.

As the OTLP specification says for JSON: keys are lowerCamelCase, trace and span ids
are hex strings, 64-bit integers may be sent as decimal strings (the protobuf JSON
mapping's way) or numbers, enums are numbers, and unknown fields are ignored. The
attribute names match the protobuf messages' (snake_case in Python), so the records
are walked by the same code whatever the encoding.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

# A 64-bit integer: a number, or its decimal text as the protobuf JSON mapping writes it.
Int64 = int | Annotated[str, msgspec.Meta(pattern=r"^-?[0-9]{1,20}$")]
# A double may be text too: "NaN", "Infinity", "-Infinity" or a number's digits.
Double = float | str
# OTLP/JSON sends enums as numbers; the protobuf JSON mapping's names are taken too.
SEVERITY_NUMBERS: dict[str, int] = {"SEVERITY_NUMBER_UNSPECIFIED": 0} | {
    f"SEVERITY_NUMBER_{name}{suffix}": 1 + 4 * group + step
    for group, name in enumerate(("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"))
    for step, suffix in enumerate(("", "2", "3", "4"))
}


class _Camel(msgspec.Struct, rename="camel", omit_defaults=True):
    pass


# Nested values (an array's items, a key-value list's pairs) are kept raw and decoded
# when walked (values.py): the model is not recursive, so its JSON schema, which the
# OpenAPI document inlines, is finite.


class JsonArrayValue(_Camel):
    values: list[msgspec.Raw] = []  # JsonAnyValue each


class JsonKeyValue(_Camel):
    key: str
    value: JsonAnyValue | None = None


class JsonKeyValueList(_Camel):
    values: list[msgspec.Raw] = []  # JsonKeyValue each


class JsonAnyValue(_Camel):
    string_value: str | None = None
    bool_value: bool | None = None
    int_value: Int64 | None = None
    double_value: Double | None = None
    array_value: JsonArrayValue | None = None
    kvlist_value: JsonKeyValueList | None = None
    bytes_value: bytes | None = None  # base64 in JSON


class JsonResource(_Camel):
    attributes: list[JsonKeyValue] = []


class JsonScope(_Camel):
    name: str = ""


class JsonLogRecord(_Camel):
    time_unix_nano: Int64 = 0
    observed_time_unix_nano: Int64 = 0
    severity_number: int | str = 0
    severity_text: str = ""
    body: JsonAnyValue | None = None
    attributes: list[JsonKeyValue] = []
    dropped_attributes_count: int = 0
    trace_id: str = ""
    span_id: str = ""
    event_name: str = ""


class JsonScopeLogs(_Camel):
    scope: JsonScope | None = None
    log_records: list[JsonLogRecord] = []


class JsonResourceLogs(_Camel):
    resource: JsonResource | None = None
    scope_logs: list[JsonScopeLogs] = []


class JsonLogsRequest(_Camel):
    """The body of POST /v1/logs with Content-Type: application/json."""

    resource_logs: list[JsonResourceLogs] = []


class JsonPartialSuccess(_Camel):
    rejected_log_records: str = "0"  # int64: a string in the JSON mapping
    error_message: str = ""


class JsonLogsResponse(_Camel):
    """The 200 answer in JSON: `{}` when every record was accepted."""

    partial_success: JsonPartialSuccess | None = None


class JsonStatus(_Camel):
    """google.rpc.Status in JSON: the body of every OTLP error answer."""

    code: int
    message: str
