-- A word's count per hour of its span, so that a word's histogram by hours over days
-- comes from the word counts too (shared/word_counts.py), as its count over days does.

-- Counts made before have no hours: they are dropped, and the janitor counts each span
-- again, oldest first (services/janitor/word_counts.py). Until then a search is counted
-- from its rows, exactly, as before the word counts.
TRUNCATE log_word_spans, log_word_counts;

-- Sparse, one element per hour of a cell holding the word: hour_keys[i] is the cell's
-- position in the arrays (from 0) times 24 plus the hour of the span (from 0), and
-- hour_counts[i] the cell's entries in that hour. A day span's word is in 2-3 hours of
-- a rare cell and all 24 of a busy one; keys and counts together are 8 bytes per hour.
ALTER TABLE log_word_counts
    ADD COLUMN hour_keys   integer[] NOT NULL,
    ADD COLUMN hour_counts integer[] NOT NULL;
