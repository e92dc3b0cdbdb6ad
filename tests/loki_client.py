"""Loki push bodies as Promtail and Grafana Alloy build them: Loki's push.proto compiled
with protoc (grpcio-tools), serialized by the protobuf library, compressed by
python-snappy as a snappy block; and the JSON form."""

from __future__ import annotations

import functools
import importlib.util
import tempfile
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc_tools
import snappy
from grpc_tools import protoc

PROTO = Path(__file__).parent / "protos" / "loki_push.proto"
PROTOBUF = "application/x-protobuf"


@functools.cache
def logproto() -> ModuleType:
    """The generated module of tests/protos/loki_push.proto (compiled once per run)."""
    out = Path(tempfile.mkdtemp(prefix="logproto-"))
    include = Path(grpc_tools.__file__).parent / "_proto"
    code = protoc.main(
        ["protoc", f"-I{PROTO.parent}", f"-I{include}", f"--python_out={out}", PROTO.name]
    )
    assert code == 0, "protoc failed"
    spec = importlib.util.spec_from_file_location("loki_push_pb2", out / "loki_push_pb2.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nanos(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


Entry = tuple[int, str] | tuple[int, str, dict[str, str]]


def push_request(streams: list[tuple[str, list[Entry]]]) -> Any:
    """A PushRequest: (labels as Promtail writes them, [(ns, line, {metadata}?), ...])."""
    request = logproto().PushRequest()
    for labels, entries in streams:
        stream = request.streams.add(labels=labels)
        for entry in entries:
            item = stream.entries.add(line=entry[1])
            item.timestamp.seconds, item.timestamp.nanos = divmod(entry[0], 1_000_000_000)
            for name, value in (entry[2] if len(entry) == 3 else {}).items():
                item.structuredMetadata.add(name=name, value=value)
    return request


def protobuf_body(streams: list[tuple[str, list[Entry]]]) -> bytes:
    """What Promtail POSTs: the serialized request, snappy-compressed (block format)."""
    return snappy.compress(push_request(streams).SerializeToString())


def json_body(streams: list[tuple[dict[str, str], list[Entry]]]) -> dict[str, Any]:
    return {
        "streams": [
            {"stream": labels, "values": [[str(e[0]), *e[1:]] for e in entries]}
            for labels, entries in streams
        ]
    }
