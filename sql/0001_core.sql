-- Core schema: partitioned log storage, the writer's rollups and inbox, and the seed's
-- retention and alert tables. Applied once by shared/migrate.py, recorded in
-- schema_migrations; every statement is also safe to re-run.

-- Settings fixed when the database is created (the partition interval cannot change
-- once partitions exist: ranges of two sizes would overlap).
CREATE TABLE IF NOT EXISTS log_settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE IF NOT EXISTS log_entries (
    id           uuid        NOT NULL,
    tenant_id    uuid        NOT NULL,
    "timestamp"  timestamptz NOT NULL,
    level        smallint    NOT NULL CHECK (level BETWEEN 1 AND 5),
    service_name text        NOT NULL,
    message      text        NOT NULL,
    trace_id     text,
    span_id      text,
    user_id      text,
    request_id   text,
    metadata     jsonb,
    source       text,
    host         text,
    environment  text
) PARTITION BY RANGE ("timestamp");
-- No DEFAULT partition on purpose: it would swallow rows for missing ranges and block
-- DETACH PARTITION CONCURRENTLY. Partitions are made ahead and on demand instead.

-- Lean index set (see ARCHITECTURE.md, pitfall 4): tenant+time serves listing and
-- time-bounded filters, tenant+service+time the per-service view, partial B-trees the
-- trace and request lookups. Query-shape indexes are added by later migrations, each
-- with its measured cost.
CREATE INDEX IF NOT EXISTS log_entries_tenant_time ON log_entries (tenant_id, "timestamp" DESC);
CREATE INDEX IF NOT EXISTS log_entries_tenant_service_time
    ON log_entries (tenant_id, service_name, "timestamp" DESC);
CREATE INDEX IF NOT EXISTS log_entries_trace ON log_entries (trace_id) WHERE trace_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS log_entries_request ON log_entries (request_id)
    WHERE request_id IS NOT NULL;

-- Creates the partition holding `ts` if it is missing; returns its name. Serialised by
-- an advisory lock so writers and the janitor racing for the same day do not collide.
CREATE OR REPLACE FUNCTION ensure_log_partition(ts timestamptz) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    unit text := coalesce(
        (SELECT value FROM log_settings WHERE key = 'partition_interval'), 'day');
    lo timestamp := date_trunc(unit, ts AT TIME ZONE 'UTC');
    hi timestamp := lo + ('1 ' || unit)::interval;
    part text := 'log_entries_p'
        || to_char(lo, CASE unit WHEN 'day' THEN 'YYYYMMDD' ELSE 'YYYYMM' END);
BEGIN
    IF to_regclass(part) IS NOT NULL THEN
        RETURN part;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext('minisource.ensure_log_partition'));
    IF to_regclass(part) IS NULL THEN
        EXECUTE format(
            'CREATE TABLE %I PARTITION OF log_entries FOR VALUES FROM (%L) TO (%L)',
            part, lo::text || '+00', hi::text || '+00');
    END IF;
    RETURN part;
END
$$;

-- Per tenant, minute, service, level and environment: count and bytes. Kept by the
-- writer in the same transaction as the COPY, so it never disagrees with log_entries.
CREATE TABLE IF NOT EXISTS log_counts (
    tenant_id    uuid        NOT NULL,
    minute       timestamptz NOT NULL,
    service_name text        NOT NULL,
    level        smallint    NOT NULL,
    environment  text        NOT NULL DEFAULT '',
    count        bigint      NOT NULL,
    bytes        bigint      NOT NULL,
    PRIMARY KEY (tenant_id, minute, service_name, level, environment)
);

-- Stream messages already stored: a redelivered message found here is acknowledged and
-- skipped, which makes at-least-once delivery store exactly once.
CREATE TABLE IF NOT EXISTS ingest_inbox (
    stream       text        NOT NULL,
    message_id   text        NOT NULL,
    tenant_id    uuid        NOT NULL,
    rows         integer     NOT NULL,
    committed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream, message_id)
);
CREATE INDEX IF NOT EXISTS ingest_inbox_committed ON ingest_inbox (committed_at);

CREATE TABLE IF NOT EXISTS log_retention_policies (
    id              uuid        PRIMARY KEY,
    tenant_id       uuid        NOT NULL UNIQUE,
    retention_days  integer     NOT NULL CHECK (retention_days > 0),
    max_size_gb     numeric(12, 3) CHECK (max_size_gb > 0),
    archive_enabled boolean     NOT NULL DEFAULT false,
    archive_path    text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS log_alerts (
    id             uuid        PRIMARY KEY,
    tenant_id      uuid        NOT NULL,
    name           text        NOT NULL,
    description    text        NOT NULL DEFAULT '',
    filter         jsonb       NOT NULL DEFAULT '{}',
    threshold      integer     NOT NULL CHECK (threshold > 0),
    window_mins    integer     NOT NULL CHECK (window_mins > 0),
    severity       text        NOT NULL DEFAULT 'warning',
    channels       jsonb       NOT NULL DEFAULT '[]',
    group_by       text[]      NOT NULL DEFAULT '{}',
    cooldown_mins  integer     NOT NULL DEFAULT 0 CHECK (cooldown_mins >= 0),
    enabled        boolean     NOT NULL DEFAULT true,
    last_triggered timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS log_alerts_tenant ON log_alerts (tenant_id);
