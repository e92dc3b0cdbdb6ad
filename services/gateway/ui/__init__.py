"""The built-in web log explorer (README, "Web UI")."""
