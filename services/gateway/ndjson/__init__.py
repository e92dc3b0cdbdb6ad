"""JSON lines ingest (POST /api/v1/logs/ndjson): NDJSON or a JSON array from agents such
as Fluent Bit and Vector, fields named by query parameters, answered as /batch."""
