"""/api/v1/retention: per-tenant retention policies and the janitor's runs (issue 18)."""
