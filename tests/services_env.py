"""Where the tests find PostgreSQL and Redis: the local ones, or testcontainers.

The machine's services are the normal path. Only when one of them does not answer and
a Docker engine is reachable are containers started (the optional testcontainers path).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import Any


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Endpoints:
    postgres_host: str
    postgres_port: int
    redis_host: str
    redis_port: int
    containers: list[Any] = field(default_factory=list)

    def close(self) -> None:
        for container in self.containers:
            container.stop()


def ensure_services() -> Endpoints:
    pg_host = os.environ.get("POSTGRES_HOST", "127.0.0.1")
    pg_port = int(os.environ.get("POSTGRES_PORT", "5432"))
    rd_host = os.environ.get("REDIS_HOST", "127.0.0.1")
    rd_port = int(os.environ.get("REDIS_PORT", "6379"))
    endpoints = Endpoints(pg_host, pg_port, rd_host, rd_port)
    pg_up, redis_up = _answers(pg_host, pg_port), _answers(rd_host, rd_port)
    if pg_up and redis_up:
        return endpoints
    if not os.path.exists("/var/run/docker.sock"):
        missing = [n for n, up in (("PostgreSQL", pg_up), ("Redis", redis_up)) if not up]
        raise RuntimeError(
            f"{' and '.join(missing)} not reachable and no Docker engine for testcontainers; "
            "start them (see README, 'Running the tests')"
        )
    if not pg_up:
        from testcontainers.postgres import PostgresContainer

        pg = PostgresContainer("postgres:15", username="postgres", password="", dbname="test")
        pg.with_env("POSTGRES_HOST_AUTH_METHOD", "trust").start()
        endpoints.containers.append(pg)
        endpoints.postgres_host = pg.get_container_host_ip()
        endpoints.postgres_port = int(pg.get_exposed_port(5432))
    if not redis_up:
        from testcontainers.redis import RedisContainer

        redis = RedisContainer("redis:7").start()
        endpoints.containers.append(redis)
        endpoints.redis_host = redis.get_container_host_ip()
        endpoints.redis_port = int(redis.get_exposed_port(6379))
    return endpoints
