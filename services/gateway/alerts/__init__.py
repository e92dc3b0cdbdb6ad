"""/api/v1/alerts: a tenant's alert rules, their history and a dry run (issue 17)."""
