"""Ingest limits per tenant: how fast it may ingest and how much one request may carry.

Each limit has a deployment default (shared/settings.py) that a tenant's row may
override (`PUT /api/v1/admin/tenants/{id}/limits`). Sizes are refused with 413 (or, for
one entry of a batch, listed among the batch's errors); rates and concurrency with 429
and Retry-After. Every refusal names the limit (`limit`, `limit_value` in the problem).

- Ingest rate: two token buckets per tenant (logs/s and bytes/s of request body) in one
  Redis hash, taken together by one Lua script on Redis's clock, so every gateway
  replica draws from the same buckets. A full bucket holds TENANT_BURST_SECONDS of rate,
  and never less than one largest allowed request. Only accepted requests are charged:
  the tokens are taken before the enqueue (so concurrent requests cannot spend them
  twice) and given back when the enqueue refuses (503) or replays an Idempotency-Key.
- Query concurrency is the query API's (services/gateway/query/concurrency.py).
"""

from __future__ import annotations

import logging
import math
import uuid
from dataclasses import dataclass, replace

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.gateway.admin.tenancy import EffectiveLimits
from services.gateway.ingest.validation import Limits, Validated
from shared.errors import FieldError, PayloadTooLarge, RateLimited, Unavailable
from shared.model import entry_size
from shared.redis_keys import RedisKeys
from shared.settings import Settings

# Two token buckets (logs, bytes) of one tenant in one hash, refilled by the time elapsed
# on Redis's clock (shared by every gateway). Both are taken or neither. A rate of 0 is
# unlimited. Returns {0, ''} when taken, {milliseconds to wait, bucket} when refused.
_TAKE = """
local now_t = redis.call('TIME')
local now = tonumber(now_t[1]) * 1000 + math.floor(tonumber(now_t[2]) / 1000)
local lr, lb = tonumber(ARGV[1]), tonumber(ARGV[2])
local br, bb = tonumber(ARGV[3]), tonumber(ARGV[4])
local nl, nb = tonumber(ARGV[5]), tonumber(ARGV[6])
local s = redis.call('HMGET', KEYS[1], 'l', 'b', 't')
local elapsed = math.max(0, now - (tonumber(s[3]) or now)) / 1000
local l = math.min(lb, (tonumber(s[1]) or lb) + elapsed * lr)
local b = math.min(bb, (tonumber(s[2]) or bb) + elapsed * br)
local wait_l, wait_b = 0, 0
if lr > 0 and nl > l then wait_l = (nl - l) / lr end
if br > 0 and nb > b then wait_b = (nb - b) / br end
if wait_l > 0 or wait_b > 0 then
    if wait_l >= wait_b then return {math.ceil(wait_l * 1000), 'logs'} end
    return {math.ceil(wait_b * 1000), 'bytes'}
end
if lr > 0 then l = l - nl end
if br > 0 then b = b - nb end
redis.call('HSET', KEYS[1], 'l', l, 'b', b, 't', now)
local full = 0
if lr > 0 then full = math.max(full, lb / lr) end
if br > 0 then full = math.max(full, bb / br) end
redis.call('PEXPIRE', KEYS[1], math.ceil(full * 1000) + 1000)
return {0, ''}
"""


# Gives back what _TAKE took, capped at the full bucket (a bucket never holds more than
# its burst, refund or not). The stored time is left alone: the next _TAKE adds the
# refill since then, as it would have had the tokens never left. No hash: it expired full.
_GIVE_BACK = """
local s = redis.call('HMGET', KEYS[1], 'l', 'b')
if not s[1] then return 0 end
local l = math.min(tonumber(ARGV[1]), tonumber(s[1]) + tonumber(ARGV[3]))
local b = math.min(tonumber(ARGV[2]), tonumber(s[2]) + tonumber(ARGV[4]))
redis.call('HSET', KEYS[1], 'l', l, 'b', b)
return 1
"""

log = logging.getLogger("gateway.ingest")


@dataclass(frozen=True, slots=True)
class Charge:
    """What one request took from its tenant's buckets: the bucket sizes it was taken
    under, and the logs and bytes taken from each (0 from a bucket with no rate)."""

    key: str
    logs_burst: float
    bytes_burst: float
    logs: int
    size: int


class RateLimiter:
    """The ingest token buckets of every tenant, in Redis."""

    def __init__(self, redis: Redis, settings: Settings) -> None:
        self._take = redis.register_script(_TAKE)
        self._give_back = redis.register_script(_GIVE_BACK)
        self._keys = RedisKeys.from_settings(settings)
        self._burst_seconds = settings.tenant_burst_seconds

    async def take(
        self, tenant_id: uuid.UUID, limits: EffectiveLimits, logs: int, size: int
    ) -> Charge | None:
        """Take `logs` entries and `size` bytes from the tenant's buckets, or raise 429.
        Returns what was taken (None: the tenant has no rate limit), for `give_back`."""
        if not limits.logs_per_second and not limits.bytes_per_second:
            return None
        logs_burst = max(limits.logs_per_second * self._burst_seconds, limits.max_batch_entries)
        bytes_burst = max(limits.bytes_per_second * self._burst_seconds, limits.max_body_bytes)
        key = self._keys.rate(str(tenant_id))
        try:
            wait_ms, bucket = await self._take(
                keys=[key],
                args=[
                    limits.logs_per_second,
                    logs_burst,
                    limits.bytes_per_second,
                    bytes_burst,
                    logs,
                    size,
                ],
            )
        except (RedisError, OSError) as exc:
            raise Unavailable(
                "the ingest queue is unreachable; nothing was accepted, retry later",
                retry_after=2,
            ) from exc
        if not wait_ms:
            return Charge(
                key,
                logs_burst,
                bytes_burst,
                logs if limits.logs_per_second else 0,
                size if limits.bytes_per_second else 0,
            )
        retry_after = max(1, math.ceil(int(wait_ms) / 1000))
        if bucket == b"logs":
            name, value, unit = "ingest_logs_per_second", limits.logs_per_second, "logs/s"
        else:
            name, value, unit = "ingest_bytes_per_second", limits.bytes_per_second, "bytes/s"
        raise RateLimited(
            f"this tenant's ingest rate limit is reached ({name} = {value} {unit}); nothing "
            f"was accepted, retry in {retry_after} s",
            retry_after=retry_after,
            extra={"limit": name, "limit_value": value},
        )

    async def give_back(self, charge: Charge | None) -> None:
        """Return a charge for a request that was not accepted after all. Best effort: if
        Redis cannot be reached the tenant stays charged, which never over-admits."""
        if charge is None:
            return
        try:
            await self._give_back(
                keys=[charge.key],
                args=[charge.logs_burst, charge.bytes_burst, charge.logs, charge.size],
            )
        except (RedisError, OSError) as exc:
            log.warning("could not give back rate tokens to %s: %s", charge.key, exc)


@dataclass(frozen=True, slots=True)
class IngestLimits:
    """One tenant's ingest limits, checked step by step as a request is read."""

    tenant_id: uuid.UUID
    limits: EffectiveLimits

    def check_body(self, size: int) -> None:
        if size > self.limits.max_body_bytes:
            raise _too_large(
                f"the body is {size} bytes", "max_body_bytes", self.limits.max_body_bytes
            )

    def check_batch(self, entries: int) -> None:
        if entries > self.limits.max_batch_entries:
            raise _too_large(
                f"the batch has {entries} entries",
                "max_batch_entries",
                self.limits.max_batch_entries,
            )

    def validation(self, base: Limits) -> Limits:
        """The validation limits with this tenant's metadata key limit."""
        return replace(base, max_metadata_keys=self.limits.max_metadata_keys)

    def drop_oversized(self, result: Validated, base: Limits) -> Validated:
        """Move entries larger than max_entry_bytes from the records to the errors."""
        limit = self.limits.max_entry_bytes
        if limit >= base.max_message_bytes + base.max_metadata_bytes + _MAX_OTHER_FIELDS_BYTES:
            return result  # no valid entry can be this large
        kept = Validated(errors=list(result.errors))
        for record, index in zip(result.records, result.indexes, strict=True):
            if entry_size(record) > limit:
                kept.errors.append(
                    FieldError(
                        field="$",
                        reason=f"the entry is larger than {limit} bytes (max_entry_bytes)",
                        index=index,
                    )
                )
            else:
                kept.records.append(record)
                kept.indexes.append(index)
        kept.errors.sort(key=lambda e: e.index or 0)
        return kept


# service_name 128, four ids 128 each, source 512, host 256, environment 64 (in
# characters; up to 4 UTF-8 bytes each).
_MAX_OTHER_FIELDS_BYTES = 4 * (128 + 4 * 128 + 512 + 256 + 64)


def _too_large(what: str, name: str, value: int) -> PayloadTooLarge:
    # Named both ways: as PUT .../limits sets it for a tenant, and as the environment
    # variable that sets the deployment's default (max_body_bytes, MAX_BODY_BYTES).
    return PayloadTooLarge(
        f"{what}; this tenant's limit is {value} ({name}; default {name.upper()})",
        extra={"limit": name, "limit_value": value},
    )
