-- Query API (issue 3): the search extension, the id lookup index, and the view every
-- query-API read goes through. Costs measured by bench/search_indexes.py (README,
-- "Search" and "Indexes"). Every statement is safe to re-run.

-- `search` is a case-insensitive substring match (ILIKE under the "C" collation) served
-- by a trigram GIN index. pg_trgm is a trusted extension: the database owner may
-- install it. The index is NOT declared here on log_entries: maintaining it while rows
-- arrive costs more than half the COPY rate, so the janitor builds it on each
-- partition once its day is over (shared/search_index.py), and the open day is searched
-- through the tenant+time index.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- GET /api/v1/logs/{id}: without it a lookup reads every partition. Ids assigned by the
-- gateway are UUIDv7 (time-ordered), so inserts land at the right edge of the B-tree.
CREATE INDEX IF NOT EXISTS log_entries_id ON log_entries (id);

-- user_id filters: the tenant's time range is scanned otherwise (one user is a needle).
CREATE INDEX IF NOT EXISTS log_entries_tenant_user ON log_entries (tenant_id, user_id, "timestamp" DESC)
    WHERE user_id IS NOT NULL;

-- The tenant's entries: what the query API reads (shared/logstore.py), inside the
-- transaction `tenant_scope` opens (role log_reader, app.tenant_id set; the grant is in
-- 0003_tenancy.sql, which creates that role). Why not read log_entries under its
-- row-level security policy: PostgreSQL evaluates a query's own conditions after the
-- policy's unless they are leakproof, and no GIN operator (ILIKE on a trigram index,
-- @@ on tsvector) is, so under the policy `search` could never use an index. This view
-- is the same second wall -- it returns no row of another tenant, and none at all when
-- app.tenant_id is unset -- but as a plain (not security_barrier) view owned by the
-- table's owner its conditions combine with the query's and the planner may use every
-- index. The leak a plain view allows (a caller's own side-effecting function seeing
-- rows before the filter) needs arbitrary SQL, which the API never runs.
CREATE OR REPLACE VIEW tenant_log_entries AS
SELECT *
FROM log_entries
WHERE tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid;
