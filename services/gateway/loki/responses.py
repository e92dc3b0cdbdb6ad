"""Loki's response bodies: `{"status": "success", "data": …}` with streams, matrix or
vector results, sample values as strings (Go's shortest float form), and the plain-text
400 a query error gets."""

from __future__ import annotations

import math
from typing import Any

import msgspec
from litestar import Request, Response

from services.gateway.loki.answers import TEXT
from services.gateway.loki.logql import LogQLError
from services.gateway.loki.metric_query import Series

_encoder = msgspec.json.Encoder()


def sample(value: float) -> str:
    """As Loki writes a sample value (strconv.FormatFloat(v, 'f', -1, 64))."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value.is_integer() and abs(value) < 1e18:
        return str(int(value))
    return repr(value)


def timestamp(t: float) -> float | int:
    return int(t) if t.is_integer() else t


def success(data: Any) -> bytes:
    return _encoder.encode({"status": "success", "data": data})


def streams_body(result: list[dict[str, Any]], stats: dict[str, Any], categorize: bool) -> bytes:
    data: dict[str, Any] = {"resultType": "streams", "result": result, "stats": stats}
    if categorize:
        data["encodingFlags"] = ["categorize-labels"]
    return success(data)


def matrix_body(series: Series, stats: dict[str, Any]) -> bytes:
    result = [
        {
            "metric": dict(labels),
            "values": [[timestamp(t), sample(v)] for t, v in sorted(points.items())],
        }
        for labels, points in sorted(series.items())
        if points
    ]
    return success({"resultType": "matrix", "result": result, "stats": stats})


def vector_body(series: Series, stats: dict[str, Any]) -> bytes:
    result = [
        {"metric": dict(labels), "value": [timestamp(t), sample(v)]}
        for labels, points in sorted(series.items())
        for t, v in sorted(points.items())
    ]
    return success({"resultType": "vector", "result": result, "stats": stats})


def stats(seconds: float, entries: int = 0, lines: int = 0) -> dict[str, Any]:
    """Loki's `stats.summary`, the part Grafana shows (the rest is Loki's internals)."""
    return {
        "summary": {
            "bytesProcessedPerSecond": 0,
            "linesProcessedPerSecond": int(lines / seconds) if seconds > 0 else 0,
            "totalBytesProcessed": 0,
            "totalLinesProcessed": lines,
            "execTime": seconds,
            "queueTime": 0,
            "subqueries": 0,
            "totalEntriesReturned": entries,
            "splits": 0,
            "shards": 0,
            "totalPostFilterLines": lines,
            "totalStructuredMetadataBytesProcessed": 0,
        }
    }


def json_response(body: bytes, headers: dict[str, str] | None = None) -> Response[bytes]:
    return Response(body, media_type="application/json", headers=headers)


def query_error(_: Request[Any, Any, Any], exc: LogQLError) -> Response[bytes]:
    """A query Loki would refuse: 400 and the reason as plain text, as Loki's
    `http.Error` answers."""
    return Response((str(exc) + "\n").encode(), status_code=400, media_type=TEXT)
