-- Tenancy and security: tenants with their limits, hashed API keys, the admin audit
-- trail, and row-level security as the second wall behind the tenant predicate of every
-- query. Every statement is safe to re-run.

-- A tenant, and its limits. NULL in a limit column means the deployment's default
-- (shared/settings.py); a value overrides it for this tenant only.
CREATE TABLE IF NOT EXISTS tenants (
    id                      uuid        PRIMARY KEY,
    name                    text        NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 128),
    created_at              timestamptz NOT NULL DEFAULT now(),
    created_by              uuid,
    ingest_logs_per_second  integer     CHECK (ingest_logs_per_second >= 0),
    ingest_bytes_per_second bigint      CHECK (ingest_bytes_per_second >= 0),
    max_concurrent_queries  integer     CHECK (max_concurrent_queries > 0),
    max_body_bytes          integer     CHECK (max_body_bytes > 0),
    max_entry_bytes         integer     CHECK (max_entry_bytes > 0),
    max_metadata_keys       integer     CHECK (max_metadata_keys > 0),
    max_batch_entries       integer     CHECK (max_batch_entries > 0)
);

-- The operators' tenant: the bootstrap admin key belongs to it.
INSERT INTO tenants (id, name)
VALUES ('00000000-0000-0000-0000-000000000000', 'system')
ON CONFLICT DO NOTHING;

-- Only a SHA-256 digest of each key is stored (keys are 256 random bits, so a plain
-- digest cannot be reversed by guessing); `prefix` is the key's public start, shown in
-- lists so an operator can tell keys apart.
CREATE TABLE IF NOT EXISTS api_keys (
    id         uuid        PRIMARY KEY,
    tenant_id  uuid        NOT NULL REFERENCES tenants (id),
    name       text        NOT NULL DEFAULT '' CHECK (length(name) <= 128),
    prefix     text        NOT NULL,
    key_hash   bytea       NOT NULL UNIQUE,
    scopes     text[]      NOT NULL
        CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['ingest', 'query', 'admin']),
    bootstrap  boolean     NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    created_by uuid,
    revoked_at timestamptz,
    revoked_by uuid
);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant_id, created_at);
-- At most one generated bootstrap key, so it is made (and printed) exactly once even
-- when two processes start together.
CREATE UNIQUE INDEX IF NOT EXISTS api_keys_one_bootstrap ON api_keys (bootstrap) WHERE bootstrap;

-- Who did what to which tenant, and when. `actor` says how the actor authenticated
-- (api_key, admin_api_key, trusted_header, cli, bootstrap); `actor_key_id` is its key,
-- when one; `actor_tenant_id` the tenant it acted as.
CREATE TABLE IF NOT EXISTS admin_audit (
    id              bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    actor           text        NOT NULL,
    actor_key_id    uuid,
    actor_tenant_id uuid,
    action          text        NOT NULL,
    tenant_id       uuid,
    target_id       text,
    details         jsonb       NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS admin_audit_tenant ON admin_audit (tenant_id, id DESC);

-- The role tenant-scoped transactions run as (shared/db.py `tenant_scope` switches to it
-- with SET LOCAL ROLE). It is not the tables' owner and has no BYPASSRLS, so the
-- policies below apply to it; the owner (writers, janitor, migrations) is not subject
-- to them (no FORCE ROW LEVEL SECURITY). Roles are cluster-wide: several databases
-- share this one, and each grants it what it needs on its own tables.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'log_reader') THEN
        BEGIN
            CREATE ROLE log_reader NOLOGIN;
        EXCEPTION
            -- Another database's migration created it at the same moment.
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE EXCEPTION 'role log_reader is missing and % may not create it', current_user
                    USING HINT = format('as a superuser run: CREATE ROLE log_reader NOLOGIN; '
                                        'GRANT log_reader TO %I;', current_user);
        END;
    END IF;
    IF NOT pg_has_role(current_user, 'log_reader', 'MEMBER') THEN
        BEGIN
            EXECUTE format('GRANT log_reader TO %I', current_user);
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE EXCEPTION '% is not a member of role log_reader', current_user
                USING HINT = format('as a superuser run: GRANT log_reader TO %I;', current_user);
        END;
    END IF;
END
$$;

-- The tenant of the current transaction, or NULL when none is set (then every policy
-- below matches nothing). NULLIF: a setting once made in a session reads '' afterwards.
CREATE OR REPLACE FUNCTION app_tenant_id() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid
$$;

-- Puts a table behind the second wall: row-level security with one policy matching the
-- transaction's tenant, and the grants log_reader needs. Later migrations call it for
-- each new table holding tenant data. Partitions need nothing: reads through the parent
-- apply the parent's policy, and log_reader has no grant on a partition itself.
CREATE OR REPLACE FUNCTION enable_tenant_rls(
    tbl regclass, writable boolean DEFAULT false, tenant_column name DEFAULT 'tenant_id'
) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tbl);
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %s', tbl);
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON %s USING (%I = app_tenant_id()) '
        'WITH CHECK (%I = app_tenant_id())', tbl, tenant_column, tenant_column);
    EXECUTE format('GRANT SELECT ON %s TO log_reader', tbl);
    IF writable THEN
        EXECUTE format('GRANT INSERT, UPDATE, DELETE ON %s TO log_reader', tbl);
    END IF;
END
$$;

GRANT USAGE ON SCHEMA public TO log_reader;
SELECT enable_tenant_rls('log_entries');
-- The query API reads entries through this view (sql/0002_query.sql says why).
GRANT SELECT ON tenant_log_entries TO log_reader;
SELECT enable_tenant_rls('log_counts');
-- Retention and alert CRUD may run inside tenant_scope: writable, still one tenant only.
SELECT enable_tenant_rls('log_retention_policies', writable => true);
SELECT enable_tenant_rls('log_alerts', writable => true);
SELECT enable_tenant_rls('tenants', tenant_column => 'id');
-- api_keys, admin_audit, ingest_inbox and log_settings get no grant: log_reader cannot
-- read them at all.
