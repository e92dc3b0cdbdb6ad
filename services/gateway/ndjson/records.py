"""An NDJSON body (one JSON object per line) or a JSON array of objects, as records.

Fluent Bit's `http` output (`format json_lines`) and Vector's `http` sink (`codec: json`,
newline-delimited or array framing) send these. Blank lines are skipped; a record's
index is its position among the records. A line that is not JSON does not spoil the
others: it stays as its text, refused on its own with its index (as /batch refuses one
bad entry), while the body is decoded at once whenever every line is valid.
"""

from __future__ import annotations

from typing import Any

import msgspec

from shared.errors import BadRequest, FieldError, ValidationFailed

_EMPTY = "the request body is empty; send one JSON object per line, or a JSON array of objects"
_any_list = msgspec.json.Decoder(list[Any])
_any = msgspec.json.Decoder(Any)


class BadLine(msgspec.Struct):
    """A record that is not valid JSON: its text as sent, for the error to name."""

    text: bytes


def read_records(body: bytes) -> list[Any | BadLine]:
    """The records of `body`: decoded JSON values (a record that is no object is refused
    later, with its index), or BadLine."""
    stripped = body.lstrip()
    if not stripped:
        raise BadRequest(_EMPTY)
    if stripped[:1] == b"[":
        try:
            records = _any_list.decode(body)
        except (msgspec.MsgspecError, UnicodeDecodeError) as exc:
            raise BadRequest(f"malformed JSON array: {exc}") from None
        if not records:  # as /batch answers `[]`
            raise ValidationFailed(
                "the array has no records", errors=[FieldError("$", "must not be empty")]
            )
        return records
    text = body.strip()
    try:
        # Fast path: every line at once, as the elements of one array (a blank line
        # makes it fail). As many elements as lines, or some line held more (or less)
        # than one value: then line by line.
        records = _any_list.decode(b"[" + text.replace(b"\n", b",") + b"]")
        if len(records) == text.count(b"\n") + 1:
            return records
    except (msgspec.MsgspecError, UnicodeDecodeError):
        pass
    return [_one(line) for line in text.split(b"\n") if line.strip()]


def _one(line: bytes) -> Any | BadLine:
    try:
        return _any.decode(line)
    except (msgspec.MsgspecError, UnicodeDecodeError):
        return BadLine(line)
