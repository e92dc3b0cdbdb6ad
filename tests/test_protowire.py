"""The C reader of the ingest protocols' protobuf (services/gateway/wire/): on any bytes
it answers or raises ValueError, nothing else; on requests built by the protobuf
library's generated classes, the gateway's decode gives the entries a straightforward
translation over those classes gives."""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from services.gateway.ingest.levels import level_name
from services.gateway.ingest.translated import (
    ENTRY_FIELDS,
    TEXT_BOUNDS,
    from_micros,
    metadata_fits,
)
from services.gateway.ingest.validation import Limits
from services.gateway.loki.decoding import decode_protobuf
from services.gateway.loki.labels import LabelMapping
from services.gateway.loki.translate import Translator, stream_of_text
from services.gateway.otlp.decoding import (
    Translated,
    UndecodableRequest,
    from_protobuf,
    parse_protobuf,
)
from services.gateway.otlp.mapping import RecordRejected, entry_of, origin_of, time_of
from services.gateway.wire._protowire import (
    MAX_VALUE_DEPTH,
    loki_push,
    otlp_attributes,
    otlp_logs,
)
from shared.errors import BadRequest, FieldError
from shared.model import LogEntryIn
from shared.settings import Settings
from tests.loki_client import logproto, push_request

LIMITS = Limits.from_settings(Settings())
NOW_NS = 1_796_541_708_123_456_789
READERS: list[Callable[[bytes], Any]] = [otlp_logs, otlp_attributes, loki_push]

# -- OTLP requests from the generated classes. ----------------------------------------

# Names the mapping treats apart, dotted names (flattened) and any text.
KEYS = st.one_of(
    st.sampled_from(
        [
            "service.name",
            "host.name",
            "deployment.environment.name",
            "deployment.environment",
            "code.file.path",
            "code.filepath",
            "code.line.number",
            "code.lineno",
            "user.id",
            "enduser.id",
            "request.id",
            "event.name",
            "a",
            "a.b",
            "body",
        ]
    ),
    st.text(max_size=8),
)
SCALARS = st.one_of(
    st.builds(lambda v: AnyValue(string_value=v), st.text(max_size=20)),
    st.builds(lambda v: AnyValue(bool_value=v), st.booleans()),
    st.builds(lambda v: AnyValue(int_value=v), st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda v: AnyValue(double_value=v), st.floats(allow_nan=False)),
    st.builds(lambda v: AnyValue(bytes_value=v), st.binary(max_size=8)),
    st.just(AnyValue()),
)


def _array(items: list[AnyValue]) -> AnyValue:
    value = AnyValue()
    value.array_value.values.extend(items)
    return value


def _kvlist(pairs: list[tuple[str, AnyValue]]) -> AnyValue:
    value = AnyValue()
    value.kvlist_value.values.extend(KeyValue(key=k, value=v) for k, v in pairs)
    return value


VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.builds(_array, st.lists(inner, max_size=3)),
        st.builds(_kvlist, st.lists(st.tuples(KEYS, inner), max_size=3)),
    ),
    max_leaves=6,
)
ATTRIBUTES = st.lists(st.tuples(KEYS, VALUES), max_size=6)
# Now, none, the epoch, and the far future (past 2**53 µs and past what datetime holds).
TIMES = st.one_of(
    st.sampled_from([0, NOW_NS, 1, 999, 2**53 * 1000 - 1, 2**53 * 1000, 2**64 - 1]),
    st.integers(0, 2**64 - 1),
)
IDS = st.sampled_from([b"", bytes(16), bytes(range(16)), b"\x01" * 15, bytes(8), b"\xfe" * 8])


@st.composite
def otlp_requests(draw: st.DrawFn) -> bytes:
    request = ExportLogsServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        resource_logs = request.resource_logs.add()
        for key, value in draw(ATTRIBUTES):
            resource_logs.resource.attributes.add(key=key, value=value)
        for _ in range(draw(st.integers(0, 2))):
            scope_logs = resource_logs.scope_logs.add()
            scope_logs.scope.name = draw(st.sampled_from(["", "app.scope"]))
            for _ in range(draw(st.integers(0, 3))):
                record = scope_logs.log_records.add()
                record.time_unix_nano = draw(TIMES)
                record.observed_time_unix_nano = draw(st.sampled_from([0, NOW_NS + 1000]))
                record.severity_number = draw(st.integers(-3, 30))  # type: ignore[assignment]
                record.severity_text = draw(st.sampled_from(["", "warning", "Notice", "x" * 20]))
                if draw(st.booleans()):
                    record.body.CopyFrom(draw(VALUES))
                for key, value in draw(ATTRIBUTES):
                    record.attributes.add(key=key, value=value)
                record.trace_id = draw(IDS)
                record.span_id = draw(st.sampled_from([b"", bytes(8), b"\x01" * 8, b"\x02" * 7]))
                record.event_name = draw(st.sampled_from(["", "login"]))
                record.dropped_attributes_count = draw(st.sampled_from([0, 3, 2**32 - 1]))
                record.flags = draw(st.sampled_from([0, 1]))
    return bytes(request.SerializeToString())


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def _id(raw: bytes, size: int, name: str) -> str | None:
    if raw and len(raw) != size:
        raise ValueError(f"{name} is {len(raw)} bytes")
    return raw.hex() if raw.strip(b"\x00") else None


def reference(body: bytes, limits: Limits) -> Translated:
    """The entries of a request read by the generated classes: the mapping applied
    record by record, with no size hint (every metadata object measured)."""
    out = Translated()
    index = 0
    for resource_logs in ExportLogsServiceRequest.FromString(body).resource_logs:
        resource = {kv.key: _value(kv.value) for kv in resource_logs.resource.attributes}
        for scope_logs in resource_logs.scope_logs:
            origin = origin_of(resource, scope_logs.scope.name)
            for record in scope_logs.log_records:
                try:
                    entry = entry_of(
                        origin,
                        {kv.key: _value(kv.value) for kv in record.attributes},
                        timestamp=time_of(record.time_unix_nano, record.observed_time_unix_nano),
                        severity_number=record.severity_number,
                        severity_text=record.severity_text,
                        body=_value(record.body),
                        trace_id=_id(record.trace_id, 16, "trace_id"),
                        span_id=_id(record.span_id, 8, "span_id"),
                        event_name=record.event_name,
                        dropped=record.dropped_attributes_count,
                        limits=limits,
                        size_hint=-1,
                    )
                except RecordRejected as exc:
                    out.errors.append(FieldError(exc.field, exc.reason, index))
                else:
                    out.entries.append(entry)
                    out.positions.append(index)
                index += 1
    return out


def _decoded(body: bytes, limits: Limits) -> Translated:
    return from_protobuf(parse_protobuf(body), limits)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=otlp_requests(),
    keys=st.integers(1, 70),
    size=st.sampled_from([2, 60, 400, 16 * 1024]),
    depth=st.integers(1, 8),
)
def test_otlp_requests_decode_as_the_generated_classes_read_them(
    body: bytes, keys: int, size: int, depth: int
) -> None:
    # Small limits too: the trimmed path and the size hint's shortcut meet there.
    limits = dataclasses.replace(
        LIMITS, max_metadata_keys=keys, max_metadata_bytes=size, max_metadata_depth=depth
    )
    try:
        want = reference(body, limits)
    except ValueError:  # an id of another length: the whole request is refused
        with pytest.raises(UndecodableRequest, match="_id is"):
            _decoded(body, limits)
        return
    got = _decoded(body, limits)
    assert got.entries == want.entries
    assert (got.positions, got.errors) == (want.positions, want.errors)


@st.composite
def loki_streams(draw: st.DrawFn) -> list[tuple[str, list[Any]]]:
    names = st.sampled_from(
        ["app", "level", "detected_level", "trace_id", "traceID", "host", "env", "x", "a\x00"]
    )
    values = st.sampled_from(["", "api", "warn", "ERROR", "v" * 300, "caf\u00e9", "nul\x00"])
    streams = []
    for _ in range(draw(st.integers(0, 3))):
        labels = draw(
            st.dictionaries(
                st.sampled_from(["app", "service_name", "level", "env"]),
                st.sampled_from(["a", "b", "warn"]),
                max_size=3,
            )
        )
        text = "{" + ", ".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
        entries = []
        for _ in range(draw(st.integers(0, 3))):
            stamp = draw(st.sampled_from([0, NOW_NS, -(10**9) - 1, 2**62, 17, -(2**62)]))
            line = draw(st.sampled_from(["", "line", "nul \x00 here", "\u00e9t\u00e9"]))
            pairs = draw(st.lists(st.tuples(names, values), max_size=4))
            entries.append((stamp, line, pairs))
        streams.append((text, entries))
    return streams


def _push(streams: list[tuple[str, list[Any]]]) -> bytes:
    """As tests/loki_client.py builds it; structured metadata as pairs (names repeat)."""
    request = push_request([(labels, [e[:2] for e in entries]) for labels, entries in streams])
    for stream, (_, entries) in zip(request.streams, streams, strict=True):
        for item, (_, _, pairs) in zip(stream.entries, entries, strict=True):
            for name, value in pairs:
                item.structuredMetadata.add(name=name, value=value)
    return bytes(request.SerializeToString())


MAPPING = LabelMapping(service=("service_name", "app"))
_ARGUMENT = {name: i for i, name in enumerate(ENTRY_FIELDS)}


class ReferenceTranslator(Translator):
    """The Translator with its per-line loop in Python, as it was before the C one
    (wire/_protowire.c `loki_entries`), which must do exactly the same."""

    def entries(self, entries: Any) -> None:
        stream = self._stream
        assert stream is not None
        arguments = stream.arguments()
        for timestamp, line, structured in entries:
            arguments[_ARGUMENT["timestamp"]] = timestamp
            arguments[_ARGUMENT["message"]] = line
            if self.may_hold_nul and "\x00" in line:
                self.out.fits = False
            if structured is None:
                self.out.entries.append(LogEntryIn(*arguments))
            else:
                self.out.entries.append(LogEntryIn(*self._structured(arguments.copy(), structured)))

    def _structured(self, arguments: list[Any], structured: list[str]) -> list[Any]:
        assert self._stream is not None
        metadata: dict[str, Any] | None = None
        fits = True
        pairs = iter(structured)
        for name, value in zip(pairs, pairs, strict=True):
            position = self._positions.get(name)
            if position is not None and value:
                arguments[position] = value
                fits = fits and len(value) <= (TEXT_BOUNDS[ENTRY_FIELDS[position]][1] or 0)
                continue
            if name in self._level_keys and (known := level_name(value)) is not None:
                arguments[_ARGUMENT["level"]] = known
                continue
            if metadata is None:
                metadata = dict(self._stream.metadata) if self._stream.metadata else {}
            metadata[name] = value
        if metadata is not None:
            arguments[_ARGUMENT["metadata"]] = metadata
        if self.may_hold_nul:
            fields = {
                name: arguments[i] for name, i in _ARGUMENT.items() if i in self._positions.values()
            }
            fits = fits and metadata_fits(metadata) and metadata_fits(fields)
        if not fits:
            self.out.fits = False
        return arguments


def loki_reference(data: bytes) -> Translator:
    translator = ReferenceTranslator(MAPPING, may_hold_nul=b"\x00" in data)
    for stream in logproto().PushRequest.FromString(data).streams:
        translator.stream(
            stream_of_text(stream.labels, MAPPING), stream.labels, len(stream.entries)
        )
        translator.entries(
            (
                from_micros(e.timestamp.seconds * 1_000_000 + e.timestamp.nanos // 1000),
                e.line,
                [text for p in e.structuredMetadata for text in (p.name, p.value)] or None,
            )
            for e in stream.entries
        )
    return translator


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams=loki_streams())
def test_loki_pushes_decode_as_the_generated_classes_read_them(
    streams: list[tuple[str, list[Any]]],
) -> None:
    body = _push(streams)
    try:
        want = loki_reference(body)
    except BadRequest:  # labels that do not parse: refused either way
        push = decode_protobuf(body)
        with pytest.raises(BadRequest):
            push.translate(Translator(MAPPING, may_hold_nul=push.may_hold_nul))
        return
    push = decode_protobuf(body)
    got = Translator(MAPPING, may_hold_nul=push.may_hold_nul)
    push.translate(got)
    assert push.total() == len(want.out.entries)
    assert got.out.entries == want.out.entries
    assert (got.out.fits, got.out.streams) == (want.out.fits, want.out.streams)


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [
        (0, 0),
        (NOW_NS // 10**9, NOW_NS % 10**9),
        (0, 1999),
        (-1, -1),  # nanos are an int32: negative ones are taken as sent
        (-62135596800, 0),  # datetime's first moment
        (-62135596800, -1000),
        (253402300799, 999_999_999),  # and its last
        (253402300800, 0),
        (2**62, -1),
        (-(2**63), 999_999_999),
        (2**63 - 1, 2**31 - 1),
        (9_000_000_000_000 - 1, 0),
        (-9_000_000_000_000 + 1, 0),
    ],
)
def test_loki_times_are_what_from_micros_makes_of_them(seconds: int, nanos: int) -> None:
    request = push_request([('{a="b"}', [])])
    entry = request.streams[0].entries.add(line="x")
    entry.timestamp.seconds, entry.timestamp.nanos = seconds, nanos
    ((_, ((stamp, _, _),)),) = loki_push(request.SerializeToString())
    assert stamp == from_micros(seconds * 1_000_000 + nanos // 1000)
    assert stamp.tzinfo is from_micros(0).tzinfo


# -- Hostile bytes: ValueError, never a crash or another exception. ----------------------


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_otlp_times_are_what_time_of_makes_of_them(time: int, observed: int) -> None:
    record = _record(b"\x09" + time.to_bytes(8, "little"), b"\x59" + observed.to_bytes(8, "little"))
    _, ((stamp, *_),), _ = otlp_logs(_export(record))
    assert stamp == time_of(time, observed)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_read_or_refused_with_a_value_error(data: bytes) -> None:
    for read in READERS:
        with contextlib.suppress(ValueError):
            read(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=otlp_requests(), seed=st.integers(0, 2**32), cuts=st.integers(1, 4))
def test_mutated_and_truncated_bodies_are_read_or_refused_with_a_value_error(
    body: bytes, seed: int, cuts: int
) -> None:
    chance = random.Random(seed)
    pushes = _push([('{a="b"}', [(NOW_NS, "line", [("trace_id", "ab"), ("k", "v")])])])
    for original in (body, pushes):
        mutated = bytearray(original)
        for _ in range(cuts):
            if not mutated:
                break
            at = chance.randrange(len(mutated))
            action = chance.randrange(4)
            if action == 0:
                del mutated[at:]
            elif action == 1:
                mutated[at] = chance.randrange(256)
            elif action == 2:
                mutated[at:at] = bytes(chance.randrange(256) for _ in range(chance.randrange(1, 6)))
            else:
                del mutated[at : at + chance.randrange(1, 6)]
        for read in READERS:
            with contextlib.suppress(ValueError):
                read(bytes(mutated))


# -- The rules protobuf parsers follow, kept. ----------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if not n:
            return bytes(out) + bytes([byte])
        out.append(byte | 0x80)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _export(record: bytes) -> bytes:
    """A request of one resource, one scope and this raw LogRecord."""
    return _field(1, _field(2, _field(2, record)))


def _record(*fields: bytes) -> bytes:
    """A LogRecord: INFO, a string body, then `fields`."""
    return _field(3, b"INFO") + _field(5, _field(1, b"body")) + b"".join(fields)


def _attribute(key: bytes, raw_value: bytes) -> bytes:
    return _field(6, _field(1, key) + _field(2, raw_value))


def test_unknown_fields_groups_and_known_numbers_of_another_wire_type_are_skipped() -> None:
    plain = _decoded(_export(_record()), LIMITS).entries
    noisy = _record(
        b"\x98\x06\x01",  # field 99, varint
        b"\xa3\x06" + b"\x08\x01" + _field(2, b"in a group") + b"\xa4\x06",  # group 100
        b"\x1d\x00\x00\x00\x00",  # severity_text (3) as fixed32
        b"\x0b\x08\x01\x0c",  # time_unix_nano (1) as a group
    )
    assert _decoded(_export(noisy), LIMITS).entries == plain


@pytest.mark.parametrize(
    "record",
    [
        b"\x0b\x08\x01",  # a group without its end
        b"\x0b\x14",  # an end-group tag of another field
        b"\x0c",  # an end-group tag outside any group
        b"\x1f",  # wire type 7
        b"\x00\x01",  # field number 0
        _field(3, b"\xff\xfe"),  # severity_text not UTF-8
        _field(6, _field(1, b"\xc3\x28")),  # an attribute key not UTF-8
        b"\x09\x01\x02",  # a fixed64 cut short
        b"\x80\x80\x80\x80\x80\x80\x08",  # a tag longer than 5 bytes
    ],
)
def test_malformed_structure_refuses_the_request(record: bytes) -> None:
    with pytest.raises(UndecodableRequest, match=r"^the body is not an OTLP"):
        parse_protobuf(_export(_record(record)))


def test_a_value_of_a_record_that_does_not_decode_names_the_record() -> None:
    good = _export(_record())
    bad = _export(_record(_attribute(b"k", _field(1, b"\xff"))))
    with pytest.raises(UndecodableRequest, match=r"^log record 1: a string is not valid UTF-8"):
        parse_protobuf(good + bad)


def test_only_the_last_value_of_a_repeated_attribute_key_is_judged() -> None:
    invalid, valid = _field(1, b"\xff"), _field(1, b"ok")
    replaced = _export(_record(_attribute(b"k", invalid), _attribute(b"k", valid)))
    (entry,) = _decoded(replaced, LIMITS).entries
    assert entry.metadata == {"k": "ok"}
    with pytest.raises(UndecodableRequest, match="not valid UTF-8"):
        parse_protobuf(_export(_record(_attribute(b"k", valid), _attribute(b"k", invalid))))


def _nested(levels: int) -> bytes:
    value = _field(1, b"leaf")
    for _ in range(levels):
        value = _field(5, _field(1, value))  # array_value { values: [value] }
    return value


def test_values_nest_up_to_the_bound_and_no_deeper() -> None:
    deepest = _export(_record(_attribute(b"deep", _nested(MAX_VALUE_DEPTH))))
    (entry,) = _decoded(deepest, LIMITS).entries
    assert entry.metadata is not None
    with pytest.raises(UndecodableRequest, match=r"^log record 0: a value is nested too deeply"):
        parse_protobuf(_export(_record(_attribute(b"deep", _nested(MAX_VALUE_DEPTH + 1)))))


def test_a_oneof_message_seen_twice_is_merged() -> None:
    first, second = _field(5, _field(1, _field(1, b"a"))), _field(5, _field(1, _field(1, b"")))
    value = first + _field(1, b"replaced") + first + second
    (entry,) = _decoded(_export(_record(_attribute(b"k", value))), LIMITS).entries
    assert entry.metadata == {"k": ["a", ""]}


def test_the_resource_may_follow_its_scopes() -> None:
    scope = _field(2, _field(1, _field(1, b"sc")) + _field(2, _record()))
    resource = _field(1, _field(1, _field(1, b"service.name") + _field(2, _field(1, b"svc"))))
    ((raw, name, count),), records, _ = otlp_logs(_field(1, scope + resource))
    assert (otlp_attributes(raw), name, count, len(records)) == (
        {"service.name": "svc"},
        "sc",
        1,
        1,
    )


@pytest.mark.parametrize(
    ("part", "nul"),
    [
        (_field(5, _field(1, b"plain body")), False),
        (_field(5, _field(1, b"nul \x00 body")), True),
        (_field(3, b"WARN\x00"), True),  # severity_text
        (_attribute(b"key", _field(1, b"v\x00")), True),
        (_attribute(b"k\x00y", _field(1, b"v")), True),
        (_attribute(b"list", _field(5, _field(1, _field(1, b"\x00")))), True),
        (_attribute(b"bytes", _field(7, b"\x00\x00")), False),  # bytes become base64
        (_attribute(b"int", b"\x18\x00"), False),  # int_value 0: a zero byte, no string
    ],
)
def test_the_reader_says_whether_a_string_holds_nul(part: bytes, nul: bool) -> None:
    """Validation looks for NUL in every field only when the reader saw one (or the
    resource holds one, which the origin says)."""
    body = _export(_record(part))
    *_, held = otlp_logs(body)
    assert held is nul
    assert _decoded(body, LIMITS).holds_nul is nul


def test_a_resource_holding_nul_makes_its_records_looked_at() -> None:
    resource = _field(1, _field(1, b"service.name") + _field(2, _field(1, b"s\x00vc")))
    scope = _field(2, _record(_field(5, _field(1, b"body"))))
    body = _field(1, _field(1, resource) + scope)
    *_, held = otlp_logs(body)
    assert held is False  # the resource is returned raw: the origin tells
    assert _decoded(body, LIMITS).holds_nul is True
