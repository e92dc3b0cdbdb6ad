"""The names of everything the service keeps in Redis."""

from __future__ import annotations

from dataclasses import dataclass

from shared.settings import Settings


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Every Redis key and channel of one deployment, under REDIS_KEY_PREFIX: named
    here and nowhere else, so the whole key space is on one page."""

    prefix: str
    shards: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisKeys:
        return cls(settings.redis_key_prefix, settings.stream_shards)

    def shard(self, index: int) -> str:
        return f"{self.prefix}:ingest:{index}"

    def all_shards(self) -> list[str]:
        return [self.shard(i) for i in range(self.shards)]

    @property
    def dead_letter(self) -> str:
        return f"{self.prefix}:ingest:dead"

    def idempotency(self, tenant: str, key: str) -> str:
        return f"{self.prefix}:idem:{tenant}:{key}"

    def tail_channel(self, tenant: str) -> str:
        return f"{self.prefix}:tail:{tenant}"

    def tail_control(self, gateway: str) -> str:
        """A gateway's private pub/sub channel (wakes its listener on subscription changes)."""
        return f"{self.prefix}:tail-control:{gateway}"

    def rate(self, tenant: str) -> str:
        """The tenant's ingest token buckets."""
        return f"{self.prefix}:rate:{tenant}"

    def query_cache(self, tenant: str, kind: str, digest: str) -> str:
        """One cached query answer; tenant and kind in clear, to count or drop them."""
        return f"{self.prefix}:qcache:{tenant}:{kind}:{digest}"

    def kept_hour(self, tenant: str, digest: str, hour: int) -> str:
        """One past hour's counts for one raw-counted question (shared/kept_hours.py);
        `hour`: its start in Unix seconds."""
        return f"{self.prefix}:hours:{tenant}:{digest}:{hour}"

    @property
    def evaluator_queue(self) -> str:
        """The alert evaluator's arq queue (a sorted set of due round jobs); arq names its
        health-check key after it (`<queue>:health-check`)."""
        return f"{self.prefix}:evaluator:queue"
