-- The hourly and daily rollups are filled by compaction instead of by every writer batch.
--
-- Upserting a batch's cells into log_counts_hourly and log_counts_daily as well as into
-- log_counts cost the writer's transaction ~2 us of PostgreSQL time per stored row, about
-- a seventh of the whole (`make bench-ingest`; README, "Benchmarks"): each batch updated
-- the same hour and day cells again. Now:
--
--   * `rollup_watermark.compacted_until` (W) splits time. For every minute before W the
--     hourly and daily tables hold exactly log_counts summed by hour and by day; minutes
--     from W on are in log_counts only.
--   * The janitor moves W forward every ROLLUP_COMPACT_INTERVAL: it adds the minutes in
--     [W, new W) to the hourly and daily cells, once per cell (shared/compaction.py).
--   * The writer upserts log_counts and log_counts_by_level for every cell, and the
--     hourly and daily tables only for cells before W: entries that arrive late, for
--     minutes already compacted.
--   * Queries read whole hours and days only before W's hour (shared/rollups.py).
--
-- Writers (and deletes from log_counts) hold this advisory lock in shared mode for their
-- transaction, compaction in exclusive mode, and each reads W only after taking it: a
-- cell is thus counted in the hourly and daily tables by exactly one of the two.
-- Every statement is safe to re-run.

CREATE TABLE IF NOT EXISTS rollup_watermark (
    singleton       boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    compacted_until timestamptz NOT NULL
);

-- Until this migration the writer kept the hourly and daily tables complete: W starts
-- after every minute log_counts holds (at an hour boundary), or at this hour when empty.
INSERT INTO rollup_watermark (compacted_until)
SELECT CASE
    WHEN max(minute) IS NULL THEN date_trunc('hour', now(), 'UTC')
    ELSE date_trunc('hour', greatest(max(minute), now()), 'UTC') + interval '1 hour'
END
FROM log_counts
ON CONFLICT (singleton) DO NOTHING;

-- Not tenant data: every tenant-scoped reader may see where W is.
GRANT SELECT ON rollup_watermark TO log_reader;

-- The advisory lock key shared by writers, deletes and compaction ("rollups").
CREATE OR REPLACE FUNCTION rollup_lock_key() RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$ SELECT 7813506314659770227 $$;

-- Deleting minutes from log_counts (retention, by hand) takes them out of the coarser
-- tables: from log_counts_by_level always, from the hourly and daily tables only for
-- minutes before W (later minutes were never added there).
CREATE OR REPLACE FUNCTION log_counts_rollup_delta() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    watermark timestamptz;
BEGIN
    PERFORM pg_advisory_xact_lock_shared(rollup_lock_key());
    -- A statement of its own, after the lock: it sees W as compaction left it.
    SELECT compacted_until INTO watermark FROM rollup_watermark;
    INSERT INTO log_counts_hourly AS h
        (tenant_id, hour, service_name, level, environment, count, bytes)
    SELECT tenant_id, date_trunc('hour', minute, 'UTC'), service_name, level, environment,
           -sum(count), -sum(bytes)
    FROM old_rows WHERE minute < watermark
    GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (tenant_id, hour, service_name, level, environment)
    DO UPDATE SET count = h.count + excluded.count, bytes = h.bytes + excluded.bytes;
    INSERT INTO log_counts_daily AS d
        (tenant_id, day, service_name, level, environment, count, bytes)
    SELECT tenant_id, date_trunc('day', minute, 'UTC'), service_name, level, environment,
           -sum(count), -sum(bytes)
    FROM old_rows WHERE minute < watermark
    GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (tenant_id, day, service_name, level, environment)
    DO UPDATE SET count = d.count + excluded.count, bytes = d.bytes + excluded.bytes;
    INSERT INTO log_counts_by_level AS l (tenant_id, minute, level, count, bytes)
    SELECT tenant_id, minute, level, -sum(count), -sum(bytes)
    FROM old_rows
    GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
    ON CONFLICT (tenant_id, minute, level)
    DO UPDATE SET count = l.count + excluded.count, bytes = l.bytes + excluded.bytes;
    -- Cells whose minutes were all deleted go too.
    DELETE FROM log_counts_hourly h
    USING (SELECT DISTINCT tenant_id, date_trunc('hour', minute, 'UTC') AS hour
           FROM old_rows) AS o
    WHERE h.tenant_id = o.tenant_id AND h.hour = o.hour AND h.count <= 0;
    DELETE FROM log_counts_daily d
    USING (SELECT DISTINCT tenant_id, date_trunc('day', minute, 'UTC') AS day
           FROM old_rows) AS o
    WHERE d.tenant_id = o.tenant_id AND d.day = o.day AND d.count <= 0;
    DELETE FROM log_counts_by_level l
    USING (SELECT DISTINCT tenant_id, minute FROM old_rows) AS o
    WHERE l.tenant_id = o.tenant_id AND l.minute = o.minute AND l.count <= 0;
    RETURN NULL;
END
$$;

-- Most upserts of a batch update cells an earlier batch created. Room left on each page
-- makes them HOT updates (no new index entries, old versions pruned in place): ~20 % off
-- the rollup statement's PostgreSQL time. Applies to pages written from now on.
ALTER TABLE log_counts SET (fillfactor = 50);
ALTER TABLE log_counts_hourly SET (fillfactor = 50);
ALTER TABLE log_counts_daily SET (fillfactor = 50);
ALTER TABLE log_counts_by_level SET (fillfactor = 50);
