-- user_id filters, by an index a third the width of 0002's: (tenant, user) without the
-- time. Every key of 0002's index was unique (the time in it), so B-tree deduplication
-- could not apply; without it, a user's entries share one key and a list of row
-- pointers: 11 MB against 118 MB for a 1.43M-row day of the benchmark data (1,000
-- users), about 75 bytes per log less. A user's latest entries are then found by
-- sorting that user's rows of each day instead of walking them in time order: 0.9 ->
-- 1.7-3.6 ms for a busy user's latest 100 of a day at 10M rows (README, "Search").
-- Built inside the migration's transaction: on a large log_entries it holds writes for
-- the seconds the build takes (~2 s per 1.4M-row day).
CREATE INDEX IF NOT EXISTS log_entries_user ON log_entries (tenant_id, user_id)
    WHERE user_id IS NOT NULL;
DROP INDEX IF EXISTS log_entries_tenant_user;
