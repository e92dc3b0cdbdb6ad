"""`python -m services.gateway.admin`: the tenants and keys CLI (see cli.py)."""

from services.gateway.admin.cli import main

main()
