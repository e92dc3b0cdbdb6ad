-- The writer now adds each batch to all four rollup tables itself, in the one statement
-- that already upserted log_counts (services/writer/store.py). The statement triggers
-- of 0005 did the same work by re-aggregating the transition tables with dynamic SQL
-- after every upsert, which cost 25 % of the writer's transaction (COPY + upsert,
-- measured by the former bench/rollup_cost.py: 31.7k -> 23.7k rows/s). Deletes
-- (retention, by hand) still flow through the DELETE trigger, so removing minutes from
-- log_counts keeps the coarser tables consistent.
DROP TRIGGER IF EXISTS log_counts_rollups_insert ON log_counts;
DROP TRIGGER IF EXISTS log_counts_rollups_update ON log_counts;
