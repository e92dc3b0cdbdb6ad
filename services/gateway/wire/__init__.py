"""The protobuf wire format of the ingest requests (OTLP logs, Loki push), read by a
small C extension (`_protowire.c`, CPython C API only) into plain Python values in one
call per request.

Why C: with the protobuf runtime (upb), every field read from Python makes an object
and costs a call; for a log record with ten attributes that was most of its decode and
translate cost (~10 µs of ~11). Walking the wire in C and handing over tuples, dicts
and strings leaves only the mapping to Python. Loki's mapping, a loop over each line's
structured metadata, is here too (`loki_entries`): in Python it cost as much as the
decoding.

The rules are protobuf's, as the runtime applied them: unknown fields (any wire type,
groups included) are skipped, the last value of a singular field wins, proto3 strings
must be UTF-8; anything malformed raises ValueError with a short reason. The body is
untrusted: every read is bounds-checked and nesting is bounded (`MAX_VALUE_DEPTH`
AnyValues in one another). What each function returns is in `_protowire.pyi`; the
callers are services/gateway/otlp/decoding.py, services/gateway/loki/decoding.py and
services/gateway/loki/translate.py.
"""
