-- Live tail: a per-tenant, gapless, commit-ordered number for every writer commit, and
-- the rows each commit stored, so a tail client can resume from PostgreSQL with no gap
-- and no duplicate (shared/tail.py). Every statement is safe to re-run.

-- The last number given to a tenant's commits. The writer bumps it at the end of its
-- transaction and holds the row lock until COMMIT: one tenant's commits are numbered in
-- commit order, and a rolled-back transaction leaves no gap. Updated in place on every
-- commit, hence room for HOT updates.
CREATE TABLE IF NOT EXISTS tail_seq (
    tenant_id uuid   PRIMARY KEY,
    last_seq  bigint NOT NULL CHECK (last_seq > 0)
) WITH (fillfactor = 50);

-- The rows of commit `seq` of a tenant, in tail order (entry i of the commit is
-- position `seq-i`), with their timestamps so they are read back through the
-- tenant+time index with partition pruning, without an index on log_entries.id.
-- Kept TAIL_RESUME_WINDOW seconds (pruned by the janitor); resuming from further back
-- is answered with a `dropped` event.
CREATE TABLE IF NOT EXISTS tail_batches (
    tenant_id    uuid          NOT NULL,
    seq          bigint        NOT NULL,
    rows         integer       NOT NULL,
    ids          uuid[]        NOT NULL,
    stamps       timestamptz[] NOT NULL,
    committed_at timestamptz   NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, seq),
    CHECK (cardinality(ids) = rows AND cardinality(stamps) = rows)
);
CREATE INDEX IF NOT EXISTS tail_batches_committed ON tail_batches (committed_at);

SELECT enable_tenant_rls('tail_seq');
SELECT enable_tenant_rls('tail_batches');
