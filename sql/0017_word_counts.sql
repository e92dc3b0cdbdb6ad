-- Word counts of past hours: a common word counted over days without reading its rows
-- (shared/word_counts.py says how a count uses them and why it stays exact;
-- services/janitor/word_counts.py fills them: a closed day whole, today hour by hour).

-- One row per tenant and span counted: a closed UTC day, or an hour of a day not closed.
-- A tenant's spans never overlap: a day's count replaces its hours'.
CREATE TABLE IF NOT EXISTS log_word_spans (
    tenant_id  uuid        NOT NULL,
    start      timestamptz NOT NULL,
    until      timestamptz NOT NULL,
    -- The tenant's entries in [start, until) when counted, from the rollups (daily cells
    -- for a day, hourly ones for an hour) in the same snapshot as the rows: a count uses
    -- the span only while the rollups still say so.
    rows       bigint      NOT NULL,
    -- The words with cells in log_word_counts (in at least WORD_MIN_ROWS entries).
    words      text[]      NOT NULL,
    -- Every other token of letters only (up to a cap, then as pieces below).
    rare_words text[]      NOT NULL,
    -- Which 1-, 2- and 3-character pieces occur in the span's other tokens (a bitmap).
    rare_grams bytea       NOT NULL,
    counted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, start)
);

-- Per word and span: the entries whose message holds it, per service and level (the
-- arrays' elements at one position), with the first and last of them. One row per word
-- and span keeps a word's count over a week to about ten rows, and the cells compressed
-- together: ~3 bytes per entry at 10M rows, where a row per cell and hour took 145.
CREATE TABLE IF NOT EXISTS log_word_counts (
    tenant_id uuid          NOT NULL,
    word      text          NOT NULL,
    start     timestamptz   NOT NULL,
    services  text[]        NOT NULL,
    levels    smallint[]    NOT NULL,
    counts    integer[]     NOT NULL,
    firsts    timestamptz[] NOT NULL,
    lasts     timestamptz[] NOT NULL,
    PRIMARY KEY (tenant_id, word, start)
);

SELECT enable_tenant_rls('log_word_spans');
SELECT enable_tenant_rls('log_word_counts');
