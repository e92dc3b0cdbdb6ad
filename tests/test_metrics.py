"""Prometheus metrics: every family the README's "Metrics" table documents is exposed by
its process, `/metrics` parses with prometheus-client's own parser and needs no API key,
and the counters move by exactly what was ingested, rejected, stored, queried and tailed.

The gateway and the writer run as real processes (the tail needs a real socket; the
writer serves its metrics on its own port); the evaluator's and janitor's registries are
read in the test process, which imports their modules as their processes do.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from services.evaluator import metrics as evaluator_metrics
from services.janitor import metrics as janitor_metrics
from services.writer import metrics as writer_metrics
from shared.metrics import WRITER_OFFSET, serve_worker_metrics
from shared.settings import Settings
from tests.polling import wait_until
from tests.processes import REPO, Service, free_port, service_env, wait_ready
from tests.tail_client import SSEStream

TENANT = uuid.UUID("5b0e5f5e-8a0c-4d59-a3a1-0c6f2b1d7e42")


@dataclass(frozen=True)
class Documented:
    name: str  # as scraped (counters with _total)
    type: str
    labels: frozenset[str]
    process: str

    @property
    def family(self) -> str:
        """The family name prometheus-client's parser reports (counters without _total)."""
        return self.name.removesuffix("_total") if self.type == "counter" else self.name


def documented() -> list[Documented]:
    """The README's families table: the one list of what each process exposes."""
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    found = []
    for line in section.splitlines():
        if not line.startswith("| `minisource_"):
            continue
        name, kind, labels, process = (cell.strip() for cell in line.split("|")[1:5])
        names = frozenset(re.findall(r"`(\w+)`", labels))
        found.append(Documented(name.strip("`"), kind, names, process))
    return found


def families_of(text: str) -> dict[str, Any]:
    return {f.name: f for f in text_string_to_metric_families(text)}


def assert_exposes(process: str, text: str) -> None:
    """Every documented family of `process` is in `text`, with its type and labels."""
    exposed = families_of(text)
    expected = [d for d in documented() if d.process == process]
    assert expected, f"no family of {process} documented"
    for d in expected:
        assert d.family in exposed, f"{d.name} ({process}) is documented but not exposed"
        family = exposed[d.family]
        assert family.type == d.type, d.name
        for sample in family.samples:
            assert set(sample.labels) - {"le"} == d.labels, (d.name, sample.labels)
    ours = {n for n in exposed if n.startswith("minisource_")}
    assert ours == {d.family for d in expected}, "exposed but not documented"


def value(text: str, name: str, **labels: str) -> float:
    """The sum of the samples named `name` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if _matches(sample, name, labels):
                total += sample.value
    return total


def _matches(sample: Sample, name: str, labels: dict[str, str]) -> bool:
    return sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())


def test_the_readme_documents_each_family_once_for_every_process() -> None:
    names = [d.name for d in documented()]
    assert len(names) == len(set(names))
    assert {d.process for d in documented()} == {"gateway", "writer", "evaluator", "janitor"}


@pytest.mark.parametrize(
    ("process", "registry"),
    [
        ("evaluator", evaluator_metrics.REGISTRY),
        ("janitor", janitor_metrics.REGISTRY),
        ("writer", writer_metrics.REGISTRY),
    ],
)
def test_each_worker_registry_exposes_its_documented_families(process: str, registry) -> None:
    assert_exposes(process, generate_latest(registry).decode())


async def test_metrics_need_no_api_key_and_stay_out_of_the_api_document(api_client) -> None:
    response = await api_client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert_exposes("gateway", response.text)
    schema = (await api_client.get("/schema/openapi.json")).json()
    assert "/metrics" not in schema["paths"]


async def test_stream_figures_count_what_waits_on_each_shard(client, settings) -> None:
    before = (await client.get("/metrics")).text
    assert value(before, "minisource_redis_up") == 1
    assert value(before, "minisource_stream_max_backlog_messages") == settings.stream_max_backlog
    assert value(before, "minisource_stream_backlog_messages") == 0
    for i in range(3):
        response = await client.post(
            "/api/v1/logs",
            json={"service_name": "api", "level": "INFO", "message": f"m {i}"},
            headers={"X-Tenant-ID": str(TENANT)},
        )
        assert response.status_code == 202, response.text
    after = (await client.get("/metrics")).text
    shards = [value(after, "minisource_stream_backlog_messages", shard=str(i)) for i in range(4)]
    # Round-robin over the shards, no writer yet: one message on each of three shards.
    assert sorted(shards) == [0, 1, 1, 1]
    assert value(after, "minisource_stream_pending_messages") == 0
    ages = [
        value(after, "minisource_stream_oldest_message_age_seconds", shard=str(i)) for i in range(4)
    ]
    assert all(age >= 0 for age in ages) and ages[shards.index(0)] == 0


async def test_redis_down_is_a_zero_not_a_failed_scrape(settings) -> None:
    from litestar.testing import AsyncTestClient

    from services.gateway.app import create_app

    async with AsyncTestClient(app=create_app(replace(settings, redis_port=free_port()))) as c:
        response = await c.get("/metrics")
    assert response.status_code == 200
    assert value(response.text, "minisource_redis_up") == 0
    assert "minisource_stream_backlog_messages{" not in response.text


def test_a_taken_metrics_port_is_a_warning_not_a_crash(settings, caplog) -> None:
    with socket.socket() as taken:
        taken.bind((settings.server_host, 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = replace(settings, metrics_port=port - WRITER_OFFSET)
        with serve_worker_metrics(config, WRITER_OFFSET, writer_metrics.REGISTRY) as serving:
            assert serving is None
    assert "metrics not served" in caplog.text
    with serve_worker_metrics(
        replace(settings, metrics_port=0), WRITER_OFFSET, writer_metrics.REGISTRY
    ) as serving:
        assert serving is None


# The whole pipeline, as processes.


@dataclass
class Pipeline:
    settings: Settings
    gateway_port: int
    logs: Path
    http: httpx.AsyncClient

    async def gateway_metrics(self) -> str:
        response = await self.http.get(f"http://127.0.0.1:{self.gateway_port}/metrics")
        assert response.status_code == 200
        return response.text

    async def post(self, path: str, body: bytes) -> httpx.Response:
        return await self.http.post(
            f"http://127.0.0.1:{self.gateway_port}{path}",
            content=body,
            headers={"X-Tenant-ID": str(TENANT), "Content-Type": "application/json"},
        )


@pytest.fixture
def process_settings(settings: Settings) -> Settings:
    return replace(settings, writer_batch_wait_ms=20, log_level="info")


@pytest.fixture
async def pipeline(process_settings: Settings, tmp_path: Path) -> AsyncIterator[Pipeline]:
    port = free_port()
    env = service_env(replace(process_settings, server_port=port))
    with Service("services.gateway", env, tmp_path) as gateway:
        wait_ready(gateway, f"http://127.0.0.1:{port}")
        async with httpx.AsyncClient(timeout=10) as http:
            yield Pipeline(process_settings, port, tmp_path, http)


@contextlib.contextmanager
def writer_process(pipeline: Pipeline) -> Iterator[int]:
    """A writer process; yields the port its metrics are served on."""
    port = free_port()
    config = replace(pipeline.settings, metrics_port=port - WRITER_OFFSET)
    with Service("services.writer", service_env(config), pipeline.logs) as writer:
        yield port
        assert writer.running(), writer.output()[-3000:]


async def test_counters_move_by_what_was_ingested_rejected_stored_queried_and_tailed(
    pipeline: Pipeline,
) -> None:
    before = await pipeline.gateway_metrics()
    assert_exposes("gateway", before)

    stream = await SSEStream.open(
        pipeline.gateway_port, "/api/v1/logs/stream", {"X-Tenant-ID": str(TENANT)}
    )
    assert stream.status == 200
    opening = await stream.next_event()
    assert opening is not None and opening.event == "heartbeat"
    # Five valid entries and two invalid ones (no service name; a bad level) in one batch,
    # then a batch with no valid entry (422): 5 accepted, 2 + 3 invalid.
    good = [{"service_name": "api", "level": "INFO", "message": f"kept {i}"} for i in range(5)]
    bad = [{"level": "INFO", "message": "x"}, {"service_name": "api", "level": "LOUD"}]
    first = json.dumps({"entries": good + bad}).encode()
    second = json.dumps({"entries": bad + bad[:1]}).encode()
    accepted = await pipeline.post("/api/v1/logs/batch", first)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["accepted"] == 5 and accepted.json()["rejected"] == 2
    refused = await pipeline.post("/api/v1/logs/batch", second)
    assert refused.status_code == 422, refused.text
    missing = await pipeline.http.get(f"http://127.0.0.1:{pipeline.gateway_port}/nowhere/1")
    assert missing.status_code == 404

    queued = await pipeline.gateway_metrics()

    def moved(name: str, **labels: str) -> float:
        return value(queued, name, **labels) - value(before, name, **labels)

    assert moved("minisource_ingest_entries_accepted_total") == 5
    assert moved("minisource_ingest_entries_rejected_total", reason="invalid") == 5
    assert moved("minisource_ingest_entries_rejected_total") == 5
    assert moved("minisource_ingest_received_bytes_total") == len(first) + len(second)
    batch_route = {"method": "POST", "route": "/api/v1/logs/batch"}
    http_count = "minisource_http_request_duration_seconds_count"
    assert moved(http_count, **batch_route, status="202") == 1
    assert moved(http_count, **batch_route, status="422") == 1
    assert moved(http_count, route="unmatched", status="404") == 1
    assert "/nowhere" not in queued
    assert value(queued, "minisource_tail_clients") == 1
    assert value(queued, "minisource_http_requests_in_flight") >= 1  # the tail, and this
    # No writer yet: the batch is one message waiting on one shard.
    assert value(queued, "minisource_stream_backlog_messages") == 1
    assert value(queued, "minisource_stream_oldest_message_age_seconds") >= 0

    with writer_process(pipeline) as writer_port:
        received = await stream.logs(5, within=30)
        assert sorted(e.json()["message"] for e in received) == [f"kept {i}" for i in range(5)]

        async def writer_figures() -> str | None:
            with contextlib.suppress(httpx.HTTPError):
                response = await pipeline.http.get(f"http://127.0.0.1:{writer_port}/metrics")
                if value(response.text, "minisource_writer_rows_total") == 5:
                    return response.text
            return None

        figures = await wait_until(writer_figures, within=30, what="the writer's metrics")
        assert_exposes("writer", figures)
        assert value(figures, "minisource_writer_messages_total", outcome="stored") == 1
        assert value(figures, "minisource_writer_messages_total", outcome="repeated") == 0
        assert value(figures, "minisource_writer_batches_total") == 1
        assert value(figures, "minisource_writer_batch_rows_sum") == 5
        assert value(figures, "minisource_writer_commit_duration_seconds_count") == 1
        assert value(figures, "minisource_writer_dead_letters_total") == 0

        async def drained() -> bool:
            text = await pipeline.gateway_metrics()
            return value(text, "minisource_stream_backlog_messages") == 0

        await wait_until(drained, within=30, what="the writer trimming the stored message")

    tailed = await pipeline.gateway_metrics()
    assert (
        value(tailed, "minisource_tail_events_sent_total")
        - value(before, "minisource_tail_events_sent_total")
        == 5
    )

    # The same closed range twice: computed once (a miss), then from the cache (a hit).
    end = datetime.now(UTC) - timedelta(hours=1)
    query = {"start_time": (end - timedelta(hours=1)).isoformat(), "end_time": end.isoformat()}
    for _ in range(2):
        response = await pipeline.http.get(
            f"http://127.0.0.1:{pipeline.gateway_port}/api/v1/logs",
            params=query,
            headers={"X-Tenant-ID": str(TENANT)},
        )
        assert response.status_code == 200, response.text
    queried = await pipeline.gateway_metrics()

    def since_tailed(name: str, **labels: str) -> float:
        return value(queried, name, **labels) - value(tailed, name, **labels)

    cache = "minisource_query_cache_requests_total"
    assert since_tailed(cache, kind="list", result="miss") == 1
    assert since_tailed(cache, kind="list", result="hit") == 1
    assert since_tailed(cache) == 2
    assert since_tailed("minisource_query_duration_seconds_count", endpoint="/api/v1/logs") == 2
    assert since_tailed("minisource_query_duration_seconds_count") == 2

    stream.close()

    async def tail_closed() -> bool:
        return value(await pipeline.gateway_metrics(), "minisource_tail_clients") == 0

    await wait_until(tail_closed, within=30, what="the gateway noticing the closed stream")
