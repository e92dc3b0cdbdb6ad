-- Closed partitions are rewritten in (tenant, time) order by the janitor, with a search
-- index holding the tenant beside the trigrams of `message`
-- (services/janitor/closed_partitions.py): a tenant's matches then come out of the index
-- alone instead of every tenant's. The tenant's uuid in a GIN needs btree_gin, a trusted
-- extension (the database owner may install it), shipped with PostgreSQL's contrib as
-- pg_trgm is. Partitions indexed before keep their trigram index until rewritten.
CREATE EXTENSION IF NOT EXISTS btree_gin;
