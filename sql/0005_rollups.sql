-- Coarser rollups for the query shapes log_counts is too fine for. At realistic
-- cardinality (20 services x 5 levels x 3 environments) log_counts holds about one row
-- for every one to three log rows, so a 7-day stats query or a 24-hour per-minute
-- histogram scans hundreds of thousands of rollup rows (README, "Benchmarks"):
--
--   log_counts_hourly    per tenant, UTC hour, service, level, environment, and
--   log_counts_daily     the same per UTC day: stats, the services list and storage
--                        over long ranges read whole days, then whole hours, then
--                        minutes only at the edges;
--   log_counts_by_level  per tenant, minute, level: histograms of a whole tenant (no
--                        service or environment term), 5 rows a minute at most.
--
-- Both are kept by statement-level triggers on log_counts, so they change in the
-- writer's transaction without the writer knowing about them, and can never disagree
-- with log_counts. Every statement is safe to re-run.

CREATE TABLE IF NOT EXISTS log_counts_hourly (
    tenant_id    uuid        NOT NULL,
    hour         timestamptz NOT NULL,
    service_name text        NOT NULL,
    level        smallint    NOT NULL,
    environment  text        NOT NULL DEFAULT '',
    count        bigint      NOT NULL,
    bytes        bigint      NOT NULL,
    PRIMARY KEY (tenant_id, hour, service_name, level, environment)
);

CREATE TABLE IF NOT EXISTS log_counts_daily (
    tenant_id    uuid        NOT NULL,
    day          timestamptz NOT NULL,
    service_name text        NOT NULL,
    level        smallint    NOT NULL,
    environment  text        NOT NULL DEFAULT '',
    count        bigint      NOT NULL,
    bytes        bigint      NOT NULL,
    PRIMARY KEY (tenant_id, day, service_name, level, environment)
);

CREATE TABLE IF NOT EXISTS log_counts_by_level (
    tenant_id uuid        NOT NULL,
    minute    timestamptz NOT NULL,
    level     smallint    NOT NULL,
    count     bigint      NOT NULL,
    bytes     bigint      NOT NULL,
    PRIMARY KEY (tenant_id, minute, level)
);

-- Applies one statement's change of log_counts (+ new rows, - old rows) to the three.
-- Key order in each upsert keeps concurrent writers locking rows in the same order (no
-- deadlock); hours are UTC hours whatever the session's time zone. The change is read
-- through dynamic SQL because which transition tables exist depends on the operation.
CREATE OR REPLACE FUNCTION log_counts_rollup_delta() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    delta text := CASE TG_OP
        WHEN 'INSERT' THEN
            'SELECT tenant_id, minute, service_name, level, environment, count, bytes '
            'FROM new_rows'
        WHEN 'UPDATE' THEN
            'SELECT tenant_id, minute, service_name, level, environment, count, bytes '
            'FROM new_rows UNION ALL '
            'SELECT tenant_id, minute, service_name, level, environment, -count AS count, '
            '-bytes AS bytes '
            'FROM old_rows'
        ELSE
            'SELECT tenant_id, minute, service_name, level, environment, -count AS count, '
            '-bytes AS bytes '
            'FROM old_rows'
    END;
BEGIN
    EXECUTE format($q$
        INSERT INTO log_counts_hourly AS h
            (tenant_id, hour, service_name, level, environment, count, bytes)
        SELECT tenant_id, date_trunc('hour', minute, 'UTC'), service_name, level, environment,
               sum(count), sum(bytes)
        FROM (%s) AS d
        GROUP BY 1, 2, 3, 4, 5
        HAVING sum(count) <> 0 OR sum(bytes) <> 0
        ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (tenant_id, hour, service_name, level, environment)
        DO UPDATE SET count = h.count + excluded.count, bytes = h.bytes + excluded.bytes
    $q$, delta);
    EXECUTE format($q$
        INSERT INTO log_counts_daily AS h
            (tenant_id, day, service_name, level, environment, count, bytes)
        SELECT tenant_id, date_trunc('day', minute, 'UTC'), service_name, level, environment,
               sum(count), sum(bytes)
        FROM (%s) AS d
        GROUP BY 1, 2, 3, 4, 5
        HAVING sum(count) <> 0 OR sum(bytes) <> 0
        ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (tenant_id, day, service_name, level, environment)
        DO UPDATE SET count = h.count + excluded.count, bytes = h.bytes + excluded.bytes
    $q$, delta);
    EXECUTE format($q$
        INSERT INTO log_counts_by_level AS l (tenant_id, minute, level, count, bytes)
        SELECT tenant_id, minute, level, sum(count), sum(bytes)
        FROM (%s) AS d
        GROUP BY 1, 2, 3
        HAVING sum(count) <> 0 OR sum(bytes) <> 0
        ORDER BY 1, 2, 3
        ON CONFLICT (tenant_id, minute, level)
        DO UPDATE SET count = l.count + excluded.count, bytes = l.bytes + excluded.bytes
    $q$, delta);
    IF TG_OP = 'DELETE' THEN
        -- Cells whose minutes were all deleted (retention) go too.
        DELETE FROM log_counts_hourly h
        USING (SELECT DISTINCT tenant_id, date_trunc('hour', minute, 'UTC') AS hour
               FROM old_rows) AS d
        WHERE h.tenant_id = d.tenant_id AND h.hour = d.hour AND h.count <= 0;
        DELETE FROM log_counts_daily h
        USING (SELECT DISTINCT tenant_id, date_trunc('day', minute, 'UTC') AS day
               FROM old_rows) AS d
        WHERE h.tenant_id = d.tenant_id AND h.day = d.day AND h.count <= 0;
        DELETE FROM log_counts_by_level l
        USING (SELECT DISTINCT tenant_id, minute FROM old_rows) AS d
        WHERE l.tenant_id = d.tenant_id AND l.minute = d.minute AND l.count <= 0;
    END IF;
    RETURN NULL;
END
$$;

-- An INSERT ... ON CONFLICT DO UPDATE (the writer's upsert) fires both the INSERT
-- trigger (rows inserted) and the UPDATE trigger (rows updated), each with its rows.
DROP TRIGGER IF EXISTS log_counts_rollups_insert ON log_counts;
CREATE TRIGGER log_counts_rollups_insert AFTER INSERT ON log_counts
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION log_counts_rollup_delta();
DROP TRIGGER IF EXISTS log_counts_rollups_update ON log_counts;
CREATE TRIGGER log_counts_rollups_update AFTER UPDATE ON log_counts
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION log_counts_rollup_delta();
DROP TRIGGER IF EXISTS log_counts_rollups_delete ON log_counts;
CREATE TRIGGER log_counts_rollups_delete AFTER DELETE ON log_counts
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION log_counts_rollup_delta();

-- Existing rollups, once: creating the triggers took the lock that keeps writers out
-- until this commits, so nothing is counted twice or missed.
INSERT INTO log_counts_hourly (tenant_id, hour, service_name, level, environment, count, bytes)
SELECT tenant_id, date_trunc('hour', minute, 'UTC'), service_name, level, environment,
       sum(count), sum(bytes)
FROM log_counts
WHERE NOT EXISTS (SELECT 1 FROM log_counts_hourly)
GROUP BY 1, 2, 3, 4, 5;
INSERT INTO log_counts_daily (tenant_id, day, service_name, level, environment, count, bytes)
SELECT tenant_id, date_trunc('day', minute, 'UTC'), service_name, level, environment,
       sum(count), sum(bytes)
FROM log_counts
WHERE NOT EXISTS (SELECT 1 FROM log_counts_daily)
GROUP BY 1, 2, 3, 4, 5;
INSERT INTO log_counts_by_level (tenant_id, minute, level, count, bytes)
SELECT tenant_id, minute, level, sum(count), sum(bytes)
FROM log_counts
WHERE NOT EXISTS (SELECT 1 FROM log_counts_by_level)
GROUP BY 1, 2, 3;

-- The second wall (sql/0003_tenancy.sql), where that migration is present.
DO $$
BEGIN
    IF to_regproc('enable_tenant_rls') IS NOT NULL THEN
        PERFORM enable_tenant_rls('log_counts_hourly');
        PERFORM enable_tenant_rls('log_counts_daily');
        PERFORM enable_tenant_rls('log_counts_by_level');
    END IF;
END
$$;
