-- Minute cells of closed days packed per hour: one row per tenant, hour, service, level
-- and environment, its minutes as arrays (services/janitor/count_packing.py moves them
-- out of log_counts; README, "Packed minutes").
--
-- Why: at realistic cardinality most minute cells of log_counts hold one or two entries,
-- so a row per cell (~95 bytes at the fillfactor of 50 that keeps the writer's upserts
-- HOT, plus two indexes) cost 143 bytes per stored log at 10M rows, a fifth of
-- everything. A closed day's cells no longer change but by late entries, so they need
-- neither the room for updates nor a row each: packed, an hour of one service, level
-- and environment costs its key once and ~14 bytes per minute.
--
-- Readers of minutes read the view log_count_minutes, which unnests the packed rows
-- beside log_counts' own. A late entry for a packed minute gets a log_counts cell again
-- (the writer is unchanged); the view sums both, and a later run packs it into a row of
-- its own: a key may have several packed rows, whose minutes add up. Every statement
-- is safe to re-run.

CREATE TABLE IF NOT EXISTS log_counts_packed (
    tenant_id    uuid        NOT NULL,
    hour         timestamptz NOT NULL,
    service_name text        NOT NULL,
    level        smallint    NOT NULL,
    environment  text        NOT NULL,
    -- Minutes past the hour (0-59), ascending, and each one's count and bytes.
    minutes      smallint[]  NOT NULL,
    counts       integer[]   NOT NULL,
    bytes        bigint[]    NOT NULL
);
-- Not unique: a late entry's cell, packed later, adds a row to its key.
CREATE INDEX IF NOT EXISTS log_counts_packed_tenant_hour
    ON log_counts_packed (tenant_id, hour, service_name, level, environment);
SELECT enable_tenant_rls('log_counts_packed');

-- Every minute cell, stored alone or packed. `stored_at` is the time a cell is stored
-- under: its minute in log_counts, its hour when packed. A reader bounds it (from the
-- hour holding the window's start), and `minute` where a bound cuts an hour
-- (shared/rollups.py, range_sql): that is what finds packed rows by their index, as
-- the minute of a packed cell is computed, so a bound on it filters only. In
-- log_counts the two bounds are on one column, which the planner merges (with
-- date_trunc('hour', minute) there it guessed 35 cells of a range holding 7,479 and
-- sorted them). The arrays are unnested in the select list, in step: a set-returning
-- function in FROM kept each row's cells in a tuplestore first, twice the time (a
-- service's day of minutes, the busiest tenant at 10M rows: 10-15 ms, 4-7 ms this way,
-- 4-6 as a row per cell). With security_invoker, each table's row-level security
-- applies to the caller.
CREATE OR REPLACE VIEW log_count_minutes WITH (security_invoker = true) AS
SELECT tenant_id, minute, minute AS stored_at, service_name, level, environment, count,
       bytes
FROM log_counts
UNION ALL
SELECT tenant_id, hour + past * interval '1 minute', hour, service_name, level,
       environment, count, bytes
FROM (
    SELECT tenant_id, hour, service_name, level, environment, unnest(minutes) AS past,
           unnest(counts)::bigint AS count, unnest(bytes) AS bytes
    FROM log_counts_packed
) AS cells;
GRANT SELECT ON log_count_minutes TO log_reader;

-- Moving cells into log_counts_packed deletes them from log_counts without changing any
-- count: the move sets minisource.moving_minutes for its transaction, and the DELETE
-- trigger of 0007 then leaves the coarser tables alone. Otherwise it does what it did,
-- its body now in subtract_minutes_from_rollups (below), shared with the packed table's.
CREATE OR REPLACE FUNCTION log_counts_rollup_delta() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('minisource.moving_minutes', true) = 'on' THEN
        RETURN NULL;
    END IF;
    PERFORM subtract_minutes_from_rollups(
        array_agg(tenant_id), array_agg(minute), array_agg(service_name),
        array_agg(level), array_agg(environment), array_agg(count), array_agg(bytes))
    FROM old_rows;
    RETURN NULL;
END
$$;

-- Deleting packed rows (retention) takes their minutes out of the coarser tables, as a
-- delete from log_counts does.
CREATE OR REPLACE FUNCTION log_counts_packed_rollup_delta() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM subtract_minutes_from_rollups(
        array_agg(o.tenant_id), array_agg(o.hour + m.minute * interval '1 minute'),
        array_agg(o.service_name), array_agg(o.level), array_agg(o.environment),
        array_agg(m.count::bigint), array_agg(m.bytes))
    FROM old_rows o
    CROSS JOIN LATERAL unnest(o.minutes, o.counts, o.bytes) AS m(minute, count, bytes);
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS log_counts_packed_rollups_delete ON log_counts_packed;
CREATE TRIGGER log_counts_packed_rollups_delete AFTER DELETE ON log_counts_packed
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION log_counts_packed_rollup_delta();

-- Minute cells gone (the arrays' elements at one position are one cell), under the
-- rollup lock in shared mode (0007) and against the watermark it then reads: out of
-- log_counts_by_level always, out of the hourly and daily tables for minutes before the
-- watermark (later ones were never added there), and cells left at zero removed. The
-- body of 0007's trigger, given arrays so that both triggers share it.
CREATE OR REPLACE FUNCTION subtract_minutes_from_rollups(
    tenants uuid[], minutes timestamptz[], services text[], levels smallint[],
    environments text[], counts bigint[], sizes bigint[]
) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    watermark timestamptz;
BEGIN
    IF tenants IS NULL THEN
        RETURN;
    END IF;
    PERFORM pg_advisory_xact_lock_shared(rollup_lock_key());
    -- A statement of its own, after the lock: it sees W as compaction left it.
    SELECT compacted_until INTO watermark FROM rollup_watermark;
    INSERT INTO log_counts_hourly AS h
        (tenant_id, hour, service_name, level, environment, count, bytes)
    SELECT tenant_id, date_trunc('hour', minute, 'UTC'), service_name, level, environment,
           -sum(count), -sum(bytes)
    FROM unnest(tenants, minutes, services, levels, environments, counts, sizes)
        AS g(tenant_id, minute, service_name, level, environment, count, bytes)
    WHERE minute < watermark
    GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (tenant_id, hour, service_name, level, environment)
    DO UPDATE SET count = h.count + excluded.count, bytes = h.bytes + excluded.bytes;
    INSERT INTO log_counts_daily AS d
        (tenant_id, day, service_name, level, environment, count, bytes)
    SELECT tenant_id, date_trunc('day', minute, 'UTC'), service_name, level, environment,
           -sum(count), -sum(bytes)
    FROM unnest(tenants, minutes, services, levels, environments, counts, sizes)
        AS g(tenant_id, minute, service_name, level, environment, count, bytes)
    WHERE minute < watermark
    GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (tenant_id, day, service_name, level, environment)
    DO UPDATE SET count = d.count + excluded.count, bytes = d.bytes + excluded.bytes;
    INSERT INTO log_counts_by_level AS l (tenant_id, minute, level, count, bytes)
    SELECT tenant_id, minute, level, -sum(count), -sum(bytes)
    FROM unnest(tenants, minutes, levels, counts, sizes)
        AS g(tenant_id, minute, level, count, bytes)
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (tenant_id, minute, level)
    DO UPDATE SET count = l.count + excluded.count, bytes = l.bytes + excluded.bytes;
    -- Cells whose minutes were all deleted go too.
    DELETE FROM log_counts_hourly h
    USING (SELECT DISTINCT tenant_id, date_trunc('hour', minute, 'UTC') AS hour
           FROM unnest(tenants, minutes) AS g(tenant_id, minute)) AS o
    WHERE h.tenant_id = o.tenant_id AND h.hour = o.hour AND h.count <= 0;
    DELETE FROM log_counts_daily d
    USING (SELECT DISTINCT tenant_id, date_trunc('day', minute, 'UTC') AS day
           FROM unnest(tenants, minutes) AS g(tenant_id, minute)) AS o
    WHERE d.tenant_id = o.tenant_id AND d.day = o.day AND d.count <= 0;
    DELETE FROM log_counts_by_level l
    USING (SELECT DISTINCT tenant_id, minute
           FROM unnest(tenants, minutes) AS g(tenant_id, minute)) AS o
    WHERE l.tenant_id = o.tenant_id AND l.minute = o.minute AND l.count <= 0;
END
$$;
