"""`make bench-tracing`: the ingest benchmark with tracing off and on, in the same run.

The pipeline of `make bench-ingest` (real gateway, writer and janitor processes, one
fresh database and key prefix per run, four HTTP clients sending batches of 1,000
realistic entries, the clock stopped when every row is committed), at the defaults
(1 writer process, WRITER_BATCH_ROWS=5000, 1 gateway). Runs alternate off, on, on, off,
… so that the machine's drift falls on both sides. "On" is what an operator sets:
OTEL_EXPORTER_OTLP_ENDPOINT, the default sampler (parentbased_always_on: every request
traced) and the default batch export, to a local OTLP/HTTP sink (tests/otlp_receiver.py,
its own process: it keeps the bodies and decodes them only when asked). Prints both
rates, CPU per row and the ratio; the target is on ≥ 95 % of off. Figures, not asserts.

    .venv/bin/python -m bench.tracing [--rows 300000] [--clients 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx

from bench.ingest import (
    Throughput,
    Variant,
    Workload,
    cpu_seconds,
    fresh_database,
    make_workload,
    max_rate,
    pipeline,
)
from shared.settings import Settings
from tests.processes import REPO, free_port

DEFAULTS = Variant(writers=1, batch_rows=5000, gateways=1)


@contextlib.contextmanager
def otlp_sink(logs: Path) -> Iterator[tuple[str, int]]:
    """An OTLP/HTTP receiver process; yields its endpoint (OTEL_EXPORTER_OTLP_ENDPOINT)
    and its pid."""
    port = free_port()
    with (logs / "otlp-sink.log").open("wb") as out:
        sink = subprocess.Popen(
            [sys.executable, "-m", "tests.otlp_receiver", "--port", str(port)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{endpoint}/stats", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the OTLP sink did not start")
            time.sleep(0.1)
        yield endpoint, sink.pid
    finally:
        sink.terminate()
        sink.wait(timeout=10)


def sink_stats(endpoint: str) -> dict[str, int]:
    stats: dict[str, int] = httpx.get(f"{endpoint}/stats", timeout=60).json()
    return stats


def measure(
    admin: Settings, workload: Workload, clients: int, logs: Path, env: dict[str, str] | None
) -> Throughput:
    with (
        fresh_database(admin, "trace") as settings,
        pipeline(settings, DEFAULTS, logs, env) as run,
    ):
        return asyncio.run(max_rate(settings, run, workload, clients))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=300_000, help="rows per measurement")
    parser.add_argument("--clients", type=int, default=4, help="concurrent HTTP clients")
    parser.add_argument("--rounds", type=int, default=2, help="off/on pairs (ABBA order)")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    admin = replace(
        Settings.from_env(),
        postgres_user=os.environ.get("BENCH_POSTGRES_USER", "postgres"),
        auth_mode="trusted_header",
        log_level="warning",
    )
    # Whatever the caller's environment says, "off" is off.
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        del os.environ[name]
    print(f"generating {args.rows} rows ...", flush=True)
    workload = make_workload(args.rows, args.seed)
    logs = Path(tempfile.mkdtemp(prefix="mlog-bench-tracing-"))
    order = [
        on for i in range(args.rounds) for on in ((False, True) if i % 2 == 0 else (True, False))
    ]
    results: dict[bool, list[Throughput]] = {False: [], True: []}
    with otlp_sink(logs) as (endpoint, sink_pid):
        sink_cpu_before = cpu_seconds(sink_pid)
        for on in order:
            env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint} if on else None
            measured = measure(admin, workload, args.clients, logs, env)
            results[on].append(measured)
            cpu = ", ".join(
                f"{name} {seconds * 1e6 / workload.rows:.1f}"
                for name, seconds in measured.cpu.items()
            )
            print(
                f"tracing {'on ' if on else 'off'}: {measured.end_to_end:,.0f} rows/s end to end "
                f"(HTTP accepted at {measured.accepted:,.0f} rows/s)\n"
                f"    CPU us per row: {cpu}",
                flush=True,
            )
        sink_cpu = cpu_seconds(sink_pid) - sink_cpu_before
        stats = sink_stats(endpoint)

    off = statistics.fmean(t.end_to_end for t in results[False])
    on = statistics.fmean(t.end_to_end for t in results[True])
    cpu_off = statistics.fmean(sum(t.cpu.values()) for t in results[False]) * 1e6 / workload.rows
    cpu_on = statistics.fmean(sum(t.cpu.values()) for t in results[True]) * 1e6 / workload.rows
    print(f"\n{workload.rows} rows per run, {DEFAULTS}, {len(order)} runs (ABBA order)")
    print("| tracing | end to end rows/s (mean) | runs | CPU us/row (all processes) |")
    print("| --- | --- | --- | --- |")
    for label, rate, key, cpu_row in (("off", off, False, cpu_off), ("on", on, True, cpu_on)):
        runs = ", ".join(f"{t.end_to_end:,.0f}" for t in results[key])
        print(f"| {label} | {rate:,.0f} | {runs} | {cpu_row:.1f} |")
    print(
        f"\non / off: {on / off:.1%} (target: at least 95 %)\n"
        f"the OTLP sink received {stats['spans']:,} spans in {stats['requests']:,} exports "
        f"(spans still queued when a run's processes were killed are not counted), "
        f"using {sink_cpu:.2f} s of CPU"
    )
    print(f"(service logs in {logs})")


if __name__ == "__main__":
    main()
