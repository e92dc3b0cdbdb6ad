-- Word counts of closed days: a common word counted over days without reading its rows
-- (shared/closed_day_words.py says how a count uses them and why it stays exact;
-- services/janitor/closed_day_words.py fills them once a day is settled).

-- One row per tenant and closed UTC day counted.
CREATE TABLE IF NOT EXISTS log_word_days (
    tenant_id  uuid        NOT NULL,
    day        timestamptz NOT NULL,
    -- The tenant's entries that day when counted (from log_counts_daily, in the same
    -- snapshot as the rows): a count uses the day only while the rollups still say so.
    rows       bigint      NOT NULL,
    -- The words with cells in log_word_counts (in at least WORD_MIN_ROWS entries).
    words      text[]      NOT NULL,
    -- Every other word of letters only (up to a cap, then as grams below).
    rare_words text[]      NOT NULL,
    -- Which 1-, 2- and 3-character pieces occur in the day's other tokens (a bitmap).
    rare_grams bytea       NOT NULL,
    counted_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, day)
);

-- Per word: the entries whose message holds it, per service and level (the arrays'
-- elements at one position), with the first and last of them. One row per word and day
-- keeps a word's count over a week to seven rows, and the cells compressed together:
-- ~3 bytes per entry at 10M rows, where a row per cell (and hour) took 145.
CREATE TABLE IF NOT EXISTS log_word_counts (
    tenant_id uuid          NOT NULL,
    word      text          NOT NULL,
    day       timestamptz   NOT NULL,
    services  text[]        NOT NULL,
    levels    smallint[]    NOT NULL,
    counts    integer[]     NOT NULL,
    firsts    timestamptz[] NOT NULL,
    lasts     timestamptz[] NOT NULL,
    PRIMARY KEY (tenant_id, word, day)
);

SELECT enable_tenant_rls('log_word_days');
SELECT enable_tenant_rls('log_word_counts');
