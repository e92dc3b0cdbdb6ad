-- A word's count per quarter hour of its span, where 0019 kept it per hour: the web
-- explorer draws a day in quarter hours, and a search's histogram over a day then comes
-- from the word counts too (shared/word_counts.py), as its hourly one over a week does.
-- A search's first and last entries on a day the window cuts are then found among a
-- quarter hour's rows rather than an hour's. And a word's cells now count the entries
-- holding it or a word containing it ("payment": "payments" too), so that a search for
-- a word inside other words is answered from them as well.

-- Counts made before hold hours, and a word's own entries only: they are dropped, and
-- the janitor counts each span again, oldest first (services/janitor/word_counts.py).
-- Until then a search is counted from its rows, exactly.
TRUNCATE log_word_spans, log_word_counts;

-- Sparse, one element per quarter hour of a cell holding the word: quarter_keys[i] is
-- the cell's position in the arrays (from 0) times 96 plus the quarter hour of the span
-- (from 0; an hour's span has four), and quarter_counts[i] the cell's entries in it.
ALTER TABLE log_word_counts RENAME COLUMN hour_keys TO quarter_keys;
ALTER TABLE log_word_counts RENAME COLUMN hour_counts TO quarter_counts;
