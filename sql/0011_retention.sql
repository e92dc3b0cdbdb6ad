-- Retention (issue 18): per-tenant policies (log_retention_policies, from 0001) are
-- applied by the janitor; each run is recorded here for GET /api/v1/retention/status.
CREATE TABLE IF NOT EXISTS retention_runs (
    id                 bigserial   PRIMARY KEY,
    started_at         timestamptz NOT NULL,
    finished_at        timestamptz,
    dropped_partitions integer     NOT NULL DEFAULT 0,
    deleted_rows       bigint      NOT NULL DEFAULT 0,
    deleted_bytes      bigint      NOT NULL DEFAULT 0,
    archived_rows      bigint      NOT NULL DEFAULT 0,
    archived_bytes     bigint      NOT NULL DEFAULT 0,
    archived_files     integer     NOT NULL DEFAULT 0,
    -- What was removed, per tenant and day, and why (retention, tenant quota, global quota).
    actions            jsonb       NOT NULL DEFAULT '[]',
    errors             jsonb       NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS retention_runs_started ON retention_runs (started_at DESC);

ALTER TABLE log_retention_policies DROP CONSTRAINT IF EXISTS log_retention_policies_days;
ALTER TABLE log_retention_policies ADD CONSTRAINT log_retention_policies_days
    CHECK (retention_days BETWEEN 1 AND 3650);
