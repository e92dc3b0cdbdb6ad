-- The service index gains the level as its last key: (tenant, service, time, level)
-- replaces 0001's (tenant, service, time). A service's page with a level filter (the
-- seed's `service_name` + `min_level`) then tests the level in the index, and its
-- total is counted from the index alone on a day the janitor has settled (index-only
-- scan), instead of reading every entry of the service in the window to look at its
-- level: the largest benchmark tenant's busiest service, WARN and above in one hour of
-- a closed day, 1,063 -> 326 pages read, 1.8 -> 1.0 ms warm and 5.8 -> 1.1 ms cold
-- (README, "Other indexes"). The order by time within a service is unchanged: the level
-- comes after it. It costs 8 bytes per entry (alignment: 49.2 -> 57.0 bytes per log
-- on settled days). Built inside the migration's transaction: on a large log_entries
-- it holds writes for the seconds the build takes (1.5 s per 1.43M-row day).
CREATE INDEX IF NOT EXISTS log_entries_tenant_service_time_level
    ON log_entries (tenant_id, service_name, "timestamp" DESC, level);
DROP INDEX IF EXISTS log_entries_tenant_service_time;
