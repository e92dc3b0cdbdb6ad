"""Every environment variable the processes read, typed, with the seed's defaults.

`Settings.from_env()` is the only place the environment is read. A value that does not
parse or is out of range stops the process at start with a message naming the variable,
instead of surfacing later as a confusing runtime error.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


def _int(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return parse


def _float(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if not low <= value <= high:
            raise ValueError(f"must be between {low} and {high}")
        return value

    return parse


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return parse


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be true or false")


def _key_prefix(raw: str) -> str:
    if not raw or any(c in raw for c in " \t\r\n{}"):
        raise ValueError("must be non-empty, without spaces or braces")
    return raw


def _admin_key(raw: str) -> str:
    if len(raw) < 24 or not raw.isascii() or not raw.isprintable() or " " in raw:
        raise ValueError("must be at least 24 printable ASCII characters without spaces")
    return raw


def _eval_interval(raw: str) -> int:
    value = _int(1, 3600)(raw)
    if not (60 % value == 0 or (value % 60 == 0 and 3600 % value == 0)):
        raise ValueError(
            "must divide 60 (1, 2, 5, 10, 15, 20, 30, ...) or be a multiple of 60 dividing 3600"
        )
    return value


def _label_names(raw: str) -> str:
    """A comma-separated list of label names, normalised ("service_name,app")."""
    names = [name.strip() for name in raw.split(",") if name.strip()]
    if not names or not all(n.isascii() and n.replace("_", "a").isalnum() for n in names):
        raise ValueError("must be label names separated by commas, e.g. service_name,app,job")
    return ",".join(names)


def _env(name: str, default: Any, parse: Callable[[str], Any] = str) -> Any:
    """Declare a setting: its variable, its default and how the text is parsed."""
    return field(default=default, metadata={"env": name, "parse": parse})


@dataclass(frozen=True, slots=True)
class Settings:
    # The seed's variables, with the seed's defaults.
    server_port: int = _env("SERVER_PORT", 5002, _int(1, 65535))
    postgres_host: str = _env("POSTGRES_HOST", "localhost")
    postgres_port: int = _env("POSTGRES_PORT", 5432, _int(1, 65535))
    postgres_user: str = _env("POSTGRES_USER", "log_user")
    postgres_password: str = _env("POSTGRES_PASSWORD", "")
    postgres_db: str = _env("POSTGRES_DB", "log_db")
    redis_host: str = _env("REDIS_HOST", "localhost")
    redis_port: int = _env("REDIS_PORT", 6379, _int(1, 65535))
    log_retention_days: int = _env("LOG_RETENTION_DAYS", 30, _int(1, 36500))
    log_max_size_gb: float = _env("LOG_MAX_SIZE_GB", 50.0, _float(0.001, 1_000_000))

    # Connections.
    server_host: str = _env("SERVER_HOST", "127.0.0.1")
    # On SIGTERM the gateway answers /ready with 503 at once and keeps serving this long
    # (a load balancer's time to stop sending to it), then stops accepting. SIGINT
    # (Ctrl-C), or a second signal, stops it without the wait.
    shutdown_drain_seconds: float = _env("SHUTDOWN_DRAIN_SECONDS", 5.0, _float(0, 300))
    redis_db: int = _env("REDIS_DB", 0, _int(0, 1023))
    redis_password: str = _env("REDIS_PASSWORD", "")
    redis_key_prefix: str = _env("REDIS_KEY_PREFIX", "minisource", _key_prefix)
    # Superuser used once, only to create POSTGRES_USER / POSTGRES_DB when they are absent.
    postgres_bootstrap_user: str = _env("POSTGRES_BOOTSTRAP_USER", "postgres")
    db_pool_min: int = _env("DB_POOL_MIN", 1, _int(0, 100))
    db_pool_max: int = _env("DB_POOL_MAX", 10, _int(1, 200))
    # Pages a bitmap heap scan asks the disk for ahead of reading them, for this service's
    # connections (PostgreSQL's effective_io_concurrency; its default, 1, reads one page
    # at a time). Counting a word over a week of the busiest benchmark tenant with the OS
    # cache dropped: 8.6-9.0 s at 1, 2.9-3.3 at 16, 2.2-2.5 at 64, 2.0-2.1 at 256.
    # 0 leaves the server's own setting.
    db_io_concurrency: int = _env("DB_IO_CONCURRENCY", 128, _int(0, 1000))

    # Ingest.
    partition_interval: str = _env("PARTITION_INTERVAL", "day", _choice("day", "month"))
    partitions_ahead: int = _env("PARTITIONS_AHEAD", 3, _int(1, 60))
    max_body_bytes: int = _env("MAX_BODY_BYTES", 10 * 1024 * 1024, _int(1024, 1024**3))
    max_batch_entries: int = _env("MAX_BATCH_ENTRIES", 10_000, _int(1, 1_000_000))
    max_message_bytes: int = _env("MAX_MESSAGE_BYTES", 64 * 1024, _int(16, 16 * 1024**2))
    max_metadata_bytes: int = _env("MAX_METADATA_BYTES", 16 * 1024, _int(2, 16 * 1024**2))
    max_metadata_keys: int = _env("MAX_METADATA_KEYS", 64, _int(1, 10_000))
    max_metadata_depth: int = _env("MAX_METADATA_DEPTH", 8, _int(1, 64))
    # Entries older than this (or LOG_RETENTION_DAYS when longer) are refused: they
    # would be deleted by retention anyway, or point at a clock gone wrong.
    ingest_max_age_days: int = _env("INGEST_MAX_AGE_DAYS", 0, _int(0, 36500))
    ingest_max_future_minutes: int = _env("INGEST_MAX_FUTURE_MINUTES", 60, _int(0, 525_600))
    idempotency_ttl_seconds: int = _env("IDEMPOTENCY_TTL_SECONDS", 86_400, _int(1, 2_592_000))

    # Streams.
    stream_shards: int = _env("STREAM_SHARDS", 4, _int(1, 256))
    stream_max_backlog: int = _env("STREAM_MAX_BACKLOG", 2_000, _int(1, 10_000_000))
    backpressure_retry_after: int = _env("BACKPRESSURE_RETRY_AFTER", 2, _int(1, 3600))

    # Writer.
    writer_batch_rows: int = _env("WRITER_BATCH_ROWS", 5_000, _int(1, 1_000_000))
    writer_batch_wait_ms: int = _env("WRITER_BATCH_WAIT_MS", 200, _int(1, 60_000))
    writer_claim_idle_ms: int = _env("WRITER_CLAIM_IDLE_MS", 60_000, _int(100, 86_400_000))
    writer_max_attempts: int = _env("WRITER_MAX_ATTEMPTS", 5, _int(1, 1000))
    writer_processes: int = _env("WRITER_PROCESSES", 1, _int(1, 64))
    # Consumer name in the group. Stable names let a restarted writer re-read its own
    # pending messages at once; unset, it is host-pid and XAUTOCLAIM recovers them.
    writer_name: str = _env("WRITER_NAME", "")

    # Background workers.
    janitor_interval_seconds: int = _env("JANITOR_INTERVAL", 300, _int(1, 86_400))
    # Retention (issue 18): every RETENTION_INTERVAL seconds the janitor applies the
    # policies (whole day partitions dropped where every policy allows, else bounded
    # deletes of RETENTION_DELETE_BATCH rows), the size quotas, and archives to Parquet
    # under ARCHIVE_ROOT what a policy with archive_enabled removes.
    retention_interval_seconds: int = _env("RETENTION_INTERVAL", 300, _int(1, 86_400))
    retention_delete_batch: int = _env("RETENTION_DELETE_BATCH", 5_000, _int(100, 1_000_000))
    # After each delete batch or archive piece the janitor rests this many times as long
    # as the step took, leaving the cores to ingest (services/janitor/pacing.py); 0: no
    # rest (a backlog of deletes goes fastest, ingest slows by about a quarter meanwhile).
    retention_pause_ratio: float = _env("RETENTION_PAUSE_RATIO", 2.0, _float(0.0, 10.0))
    archive_root: str = _env("ARCHIVE_ROOT", "archive")
    # How often the janitor adds settled minutes to the hourly and daily rollups
    # (shared/compaction.py); until then queries read those minutes from log_counts.
    rollup_compact_interval_seconds: int = _env("ROLLUP_COMPACT_INTERVAL", 15, _int(1, 3_600))
    # Alerting (issue 17): every enabled rule is evaluated once per ALERT_EVAL_INTERVAL
    # seconds (a divisor of 60, or a multiple of 60 dividing 3600: the evaluator's cron
    # fires at fixed seconds of the hour). A notification is tried ALERT_MAX_ATTEMPTS
    # times with exponential backoff, then recorded as failed. Links in notifications
    # point at PUBLIC_URL (default: http://SERVER_HOST:SERVER_PORT).
    alert_eval_interval_seconds: int = _env("ALERT_EVAL_INTERVAL", 30, _eval_interval)
    alert_max_attempts: int = _env("ALERT_MAX_ATTEMPTS", 8, _int(1, 100))
    public_url: str = _env("PUBLIC_URL", "")
    # E-mail channel: an SMTP relay (STARTTLS when SMTP_STARTTLS, the default).
    smtp_host: str = _env("SMTP_HOST", "")
    smtp_port: int = _env("SMTP_PORT", 587, _int(1, 65535))
    smtp_user: str = _env("SMTP_USER", "")
    smtp_password: str = field(
        default="", repr=False, metadata={"env": "SMTP_PASSWORD", "parse": str}
    )
    smtp_from: str = _env("SMTP_FROM", "minisource-log@localhost")
    smtp_starttls: bool = _env("SMTP_STARTTLS", True, _bool)

    # Tenancy and security (issue 4): how callers authenticate, and limits per tenant.
    # `api_key`: a key per caller (Authorization: Bearer or X-API-Key); `trusted_header`:
    # the seed's X-Tenant-ID alone, only behind a gateway that authenticates.
    auth_mode: str = _env("AUTH_MODE", "api_key", _choice("trusted_header", "api_key"))
    # An operator key taken from the environment (tenant `system`, every scope). Unset,
    # `python -m services` generates one at first start and prints it once.
    admin_api_key: str = field(
        default="", repr=False, metadata={"env": "ADMIN_API_KEY", "parse": _admin_key}
    )
    # Keys and tenant limits are cached this long in each gateway: a revoked key or a
    # changed limit takes effect within it.
    auth_cache_seconds: float = _env("AUTH_CACHE_SECONDS", 5.0, _float(0, 300))
    # Ingest rate per tenant (0 = unlimited), a token bucket in Redis shared by every
    # gateway; a full bucket holds TENANT_BURST_SECONDS of rate (at least one request).
    tenant_logs_per_second: int = _env("TENANT_LOGS_PER_SECOND", 50_000, _int(0, 10**9))
    tenant_bytes_per_second: int = _env(
        "TENANT_BYTES_PER_SECOND", 50 * 1024 * 1024, _int(0, 10**12)
    )
    tenant_burst_seconds: float = _env("TENANT_BURST_SECONDS", 2.0, _float(0.1, 3600))
    # Queries of one tenant running at once in one gateway process.
    tenant_max_concurrent_queries: int = _env("TENANT_MAX_CONCURRENT_QUERIES", 8, _int(1, 10_000))
    # Largest entry (its text fields and metadata JSON together).
    max_entry_bytes: int = _env("MAX_ENTRY_BYTES", 128 * 1024, _int(64, 64 * 1024**2))
    # Query cache (issue 3, stats and cache): answers for ranges closed in the past are
    # kept QUERY_CACHE_TTL_SECONDS, open ranges QUERY_CACHE_OPEN_TTL_SECONDS (0 = never
    # cached). A range is closed once its end is QUERY_CACHE_INGEST_LAG_SECONDS old.
    # Each Redis call of the cache gives up after QUERY_CACHE_TIMEOUT_MS (then uncached).
    query_cache_ttl_seconds: int = _env("QUERY_CACHE_TTL_SECONDS", 3600, _int(0, 604_800))
    query_cache_open_ttl_seconds: int = _env("QUERY_CACHE_OPEN_TTL_SECONDS", 5, _int(0, 3600))
    query_cache_ingest_lag_seconds: int = _env(
        "QUERY_CACHE_INGEST_LAG_SECONDS", 120, _int(0, 86_400)
    )
    query_cache_timeout_ms: int = _env("QUERY_CACHE_TIMEOUT_MS", 100, _int(1, 10_000))
    # Counts the rollups cannot answer (a search over days) keep each whole past hour's
    # counts in Redis this long (0 = never; shared/kept_hours.py). Checked against the
    # rollups on every use, so late entries and retention never make them wrong.
    search_count_keep_seconds: int = _env("SEARCH_COUNT_KEEP_SECONDS", 86_400, _int(0, 31 * 86_400))
    # Query API (issue 3, log queries): at most QUERY_CONCURRENCY queries of all tenants
    # run at once per gateway process (keep it below DB_POOL_MAX); a query waits up to
    # QUERY_QUEUE_WAIT_MS for a slot and runs at most QUERY_TIMEOUT_MS, else 503.
    query_concurrency: int = _env("QUERY_CONCURRENCY", 8, _int(1, 1000))
    query_queue_wait_ms: int = _env("QUERY_QUEUE_WAIT_MS", 2_000, _int(0, 60_000))
    query_timeout_ms: int = _env("QUERY_TIMEOUT_MS", 10_000, _int(100, 3_600_000))
    # Live tail (issue 5, GET /api/v1/logs/stream). A client's buffer holds at most
    # TAIL_CLIENT_BUFFER events (plus the commit being offered) before it is dropped;
    # streams are limited per tenant and in all per gateway process; a client may resume
    # from up to TAIL_RESUME_WINDOW seconds back; a write blocked TAIL_WRITE_TIMEOUT
    # seconds ends the stream; every TAIL_POLL_SECONDS each gateway checks PostgreSQL
    # for commits whose publish it missed.
    tail_heartbeat_seconds: float = _env("TAIL_HEARTBEAT_SECONDS", 15.0, _float(0.05, 3600))
    tail_retry_ms: int = _env("TAIL_RETRY_MS", 2_000, _int(0, 600_000))
    tail_client_buffer: int = _env("TAIL_CLIENT_BUFFER", 5_000, _int(1, 10_000_000))
    tail_max_clients_per_tenant: int = _env("TAIL_MAX_CLIENTS_PER_TENANT", 100, _int(1, 100_000))
    tail_max_clients: int = _env("TAIL_MAX_CLIENTS", 1_000, _int(1, 1_000_000))
    tail_resume_window_seconds: int = _env("TAIL_RESUME_WINDOW", 3_600, _int(1, 30 * 86_400))
    tail_write_timeout_seconds: float = _env("TAIL_WRITE_TIMEOUT", 30.0, _float(0.1, 3600))
    tail_poll_seconds: float = _env("TAIL_POLL_SECONDS", 2.0, _float(0.05, 3600))
    # Loki push (issue 20): the stream labels that name an entry's service, first
    # present wins (services/gateway/loki/labels.py).
    loki_service_labels: str = _env(
        "LOKI_SERVICE_LABELS", "service_name,service,app,job", _label_names
    )
    log_level: str = _env("LOG_LEVEL", "info", _choice("debug", "info", "warning", "error"))
    # The gateway's access log: one JSON line per request (at level info).
    access_log: bool = _env("ACCESS_LOG", True, _bool)
    # Prometheus metrics of the workers (the gateway serves /metrics on SERVER_PORT): the
    # evaluator on METRICS_PORT+1, the janitor +2, a writer +3 (shared/metrics.py); 0
    # starts none.
    metrics_port: int = _env("METRICS_PORT", 9100, _int(0, 65_400))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        problems: list[str] = []
        for f in fields(cls):
            name = f.metadata["env"]
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = f.metadata["parse"](raw)
            except ValueError as exc:
                problems.append(f"{name}={raw!r}: {exc}")
        if problems:
            raise SettingsError("invalid environment: " + "; ".join(problems))
        settings = cls(**values)
        if settings.db_pool_min > settings.db_pool_max:
            raise SettingsError("invalid environment: DB_POOL_MIN must not exceed DB_POOL_MAX")
        return settings

    @property
    def public_base_url(self) -> str:
        """Where people reach the gateway, for links in notifications: PUBLIC_URL, else
        http://SERVER_HOST:SERVER_PORT."""
        return self.public_url or f"http://{self.server_host}:{self.server_port}"

    @property
    def max_age_days(self) -> int:
        return self.ingest_max_age_days or self.log_retention_days

    def postgres_conninfo(self, *, user: str | None = None, dbname: str | None = None) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            host=self.postgres_host,
            port=self.postgres_port,
            user=user or self.postgres_user,
            password=self.postgres_password or None,
            dbname=dbname or self.postgres_db,
            application_name="minisource-log",
        )

    @staticmethod
    def documented() -> list[tuple[str, str]]:
        """(variable, default) pairs, for the README and the settings test."""
        return [(f.metadata["env"], str(f.default)) for f in fields(Settings)]
