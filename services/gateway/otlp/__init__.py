"""OTLP/HTTP logs: OpenTelemetry's own protocol, into the one ingest pipeline."""
