-- Two writers creating the same new day partition at once: the second one waited on the
-- advisory lock while the first created the table, but its catalog snapshot predates the
-- first one's commit (an advisory lock, unlike a relation lock, does not make a backend
-- read new catalog entries), so to_regclass still said "absent" and CREATE TABLE failed
-- with duplicate_table. The writer retried, but the batch waited. The table existing is
-- exactly what the caller asked for: catch it.
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
        BEGIN
            EXECUTE format(
                'CREATE TABLE %I PARTITION OF log_entries FOR VALUES FROM (%L) TO (%L)',
                part, lo::text || '+00', hi::text || '+00');
        EXCEPTION WHEN duplicate_table THEN
            NULL;  -- created by a concurrent caller that committed first
        END;
    END IF;
    RETURN part;
END
$$;
