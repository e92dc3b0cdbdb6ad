"""`python -m services.gateway.admin`: manage tenants and API keys from a shell.

Talks to PostgreSQL directly (POSTGRES_* variables), as the audit actor `cli`:

    python -m services.gateway.admin add-tenant --name acme
    python -m services.gateway.admin create --tenant acme --scopes ingest,query --name web
    python -m services.gateway.admin list [--tenant acme]
    python -m services.gateway.admin revoke KEY_ID
    python -m services.gateway.admin tenants

`--tenant` takes a tenant's id or name. A created key is printed once, on stdout alone
(so `KEY=$(python -m services.gateway.admin create ...)` works); only its digest is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Sequence
from typing import cast

import msgspec
from psycopg import AsyncConnection

from services.gateway.admin.audit import Actor
from services.gateway.admin.tenancy import (
    SCOPES,
    Scope,
    create_key,
    create_tenant,
    list_keys,
    list_tenants,
    revoke_key,
    tenant_id_by_name,
)
from shared.errors import ServiceError
from shared.settings import Settings, SettingsError

_CLI = Actor(kind="cli")
_LIST_LIMIT = 1000


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.gateway.admin", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add-tenant", help="create a tenant; prints its id")
    add.add_argument("--name", required=True)
    add.add_argument("--id", type=uuid.UUID, help="the tenant id (default: a new one)")
    create = commands.add_parser("create", help="create an API key; prints the key once")
    create.add_argument("--tenant", required=True, help="tenant id or name")
    create.add_argument("--scopes", required=True, help=f"comma-separated: {','.join(SCOPES)}")
    create.add_argument("--name", default="", help="a label for the key")
    keys = commands.add_parser("list", help="list keys (never the keys themselves)")
    keys.add_argument("--tenant", help="tenant id or name")
    revoke = commands.add_parser("revoke", help="revoke a key")
    revoke.add_argument("key_id", type=uuid.UUID)
    commands.add_parser("tenants", help="list tenants")
    return parser


def _scopes(text: str) -> list[Scope]:
    scopes = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in scopes if s not in SCOPES]
    if not scopes or unknown:
        raise SystemExit(f"--scopes takes {', '.join(SCOPES)}; got {text!r}")
    return [cast(Scope, s) for s in scopes]


async def _tenant(conn: AsyncConnection, text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    found = await tenant_id_by_name(conn, text)
    if found is None:
        raise SystemExit(f"no tenant named {text!r}")
    return found


def _print_json(value: object) -> None:
    print(msgspec.json.format(msgspec.json.encode(value)).decode())


async def run(settings: Settings, args: argparse.Namespace) -> None:
    async with await AsyncConnection.connect(settings.postgres_conninfo()) as conn:
        if args.command == "add-tenant":
            tenant = await create_tenant(conn, _CLI, name=args.name, tenant_id=args.id)
            print(tenant.id)
        elif args.command == "create":
            made = await create_key(
                conn,
                _CLI,
                tenant_id=await _tenant(conn, args.tenant),
                scopes=_scopes(args.scopes),
                name=args.name,
            )
            assert made is not None  # None only for bootstrap keys
            record, key = made
            print(
                f"key {record.id} ({record.prefix}…) for tenant {record.tenant_id}", file=sys.stderr
            )
            print(key)
        elif args.command == "list":
            tenant_id = await _tenant(conn, args.tenant) if args.tenant else None
            _print_json(await list_keys(conn, tenant_id=tenant_id, limit=_LIST_LIMIT, offset=0))
        elif args.command == "revoke":
            _print_json(await revoke_key(conn, _CLI, args.key_id))
        else:
            _print_json(await list_tenants(conn, limit=_LIST_LIMIT, offset=0))


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        sys.exit(str(exc))
    try:
        asyncio.run(run(settings, args))
    except ServiceError as exc:
        sys.exit(f"error: {exc.detail}")


if __name__ == "__main__":
    main()
