-- tail_batches keeps each commit's ids and timestamps as arrays of a few thousand
-- elements, which PostgreSQL compressed (pglz) on every writer commit. Random UUIDs do
-- not compress, and the timestamps saved a few bytes per row for an hour: the compression
-- was ~0.9 us of PostgreSQL CPU per stored row, now ~0.1 (`make bench-ingest`; README,
-- "Benchmarks"). EXTERNAL: out of line when large, never compressed. Applies to rows
-- written from now on; safe to re-run.
ALTER TABLE tail_batches
    ALTER COLUMN ids SET STORAGE EXTERNAL,
    ALTER COLUMN stamps SET STORAGE EXTERNAL;
