"""Cached reads of API keys and tenants: what a request needs before its handler runs.

Entries live AUTH_CACHE_SECONDS in each gateway process, so a revoked key or a changed
limit takes effect within that delay (0 turns the cache off). When PostgreSQL cannot be
reached, an expired entry is used rather than refusing every request: a known key keeps
working through an outage, an unknown one is refused with 503, and a tenant whose limits
were never read gets the deployment's defaults.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from services.gateway.admin.tenancy import EffectiveLimits, KeyGrant, Tenant, find_key, get_tenant
from shared.errors import Unavailable
from shared.settings import Settings

log = logging.getLogger("gateway.credentials")

K = TypeVar("K")
V = TypeVar("V")

_MAX_ENTRIES = 10_000
# A lookup waits this long for a connection: a request must not hang on a down database.
_LOOKUP_TIMEOUT = 1.0


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    expires: float


class _TtlCache(Generic[K, V]):
    """A bounded map whose entries expire; expired entries are kept (until pushed out by
    newer ones) so they can stand in while the database is unreachable."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._entries: dict[K, _Entry[V]] = {}

    def fresh(self, key: K) -> _Entry[V] | None:
        entry = self._entries.get(key)
        return entry if entry is not None and entry.expires > time.monotonic() else None

    def stale(self, key: K) -> _Entry[V] | None:
        return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        self._entries.pop(key, None)
        if len(self._entries) >= _MAX_ENTRIES:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = _Entry(value, time.monotonic() + self._ttl)

    def clear(self) -> None:
        self._entries.clear()

    def forget(self, key: K) -> None:
        self._entries.pop(key, None)


class Credentials:
    """Keys by digest and tenants by id, each read through a short-lived cache."""

    def __init__(self, pool: AsyncConnectionPool, settings: Settings) -> None:
        self._pool = pool
        self._settings = settings
        self._keys: _TtlCache[bytes, KeyGrant | None] = _TtlCache(settings.auth_cache_seconds)
        self._tenants: _TtlCache[uuid.UUID, Tenant | None] = _TtlCache(settings.auth_cache_seconds)

    async def key(self, digest: bytes) -> KeyGrant | None:
        """The grant of a live key, None for an unknown or revoked one."""
        return await self._read(self._keys, digest, lambda conn: find_key(conn, digest), "key")

    async def tenant(self, tenant_id: uuid.UUID) -> Tenant | None:
        return await self._read(
            self._tenants, tenant_id, lambda conn: get_tenant(conn, tenant_id), "tenant"
        )

    async def limits(self, tenant_id: uuid.UUID) -> EffectiveLimits:
        """The tenant's limits; the defaults for a tenant without a row (trusted_header
        mode needs none) or when the database is unreachable and nothing is cached."""
        try:
            tenant = await self.tenant(tenant_id)
        except Unavailable:
            tenant = None
            self._tenants.put(tenant_id, None)  # defaults until the next lookup
        return EffectiveLimits.of(tenant.limits if tenant else None, self._settings)

    def forget_keys(self) -> None:
        """Drop every cached key: this process sees a revocation at once."""
        self._keys.clear()

    def forget_tenant(self, tenant_id: uuid.UUID) -> None:
        self._tenants.forget(tenant_id)

    async def _read(
        self,
        cache: _TtlCache[K, V],
        key: K,
        load: Callable[[psycopg.AsyncConnection], Awaitable[V]],
        what: str,
    ) -> V:
        entry = cache.fresh(key)
        if entry is not None:
            return entry.value
        try:
            async with self._pool.connection(timeout=_LOOKUP_TIMEOUT) as conn:
                value = await load(conn)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            stale = cache.stale(key)
            if stale is not None:
                cache.put(key, stale.value)  # the next requests do not wait for the pool
                return stale.value
            log.warning("%s lookup failed: %s", what, exc)
            raise Unavailable(
                "credentials cannot be checked right now; retry later", retry_after=2
            ) from None
        cache.put(key, value)
        return value
