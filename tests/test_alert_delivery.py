"""Delivering alert notifications (issue 17, items 4 and 5): the outbox rows a state
change writes are claimed, sent through their channel and marked, with retries, a
failure recorded, at-least-once delivery across senders that die, and never two senders
on one row. Real PostgreSQL, a real HTTP receiver and a real SMTP server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from services.evaluator.channels import webhook
from services.evaluator.delivery import DeliveryPolicy
from services.evaluator.sender import run_sender
from shared.alert_events import StateChange, record_change
from shared.alerts import RULE_COLUMNS, AlertRule, GroupKey, Window, rule_from_row
from shared.db import make_pool
from shared.settings import Settings
from tests.alert_receivers import (
    Request,
    answers,
    http_receiver,
    self_signed_certificate,
    smtp_receiver,
)
from tests.conftest import TENANT
from tests.polling import wait_until
from tests.processes import Service, service_env
from tests.tail_client import TcpProxy

PUBLIC_URL = "http://logs.example.test"
SECRET = "whsec-0123456789abcdef"
CHECKOUT: GroupKey = {"service_name": "checkout"}
# Times shrunk for tests: a lease of seconds, retries after hundredths of a second.
FAST = DeliveryPolicy(
    max_attempts=8,
    lease_seconds=3.0,
    poll_seconds=0.05,
    retry_base_seconds=0.01,
    retry_cap_seconds=0.05,
    shutdown_grace_seconds=1.0,
    outage_backoff_cap_seconds=0.2,
)


def verify_signature(secret: str, header: str, body: bytes, tolerance: int = 300) -> bool:
    """What a receiver does (the README's snippet): recompute the HMAC of "<t>.<body>"
    and refuse a timestamp older than `tolerance` seconds (a replay)."""
    parts = dict(item.split("=", 1) for item in header.split(","))
    timestamp = int(parts["t"])
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = hmac.new(
        secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


def make_rule(
    db: psycopg.Connection,
    channels: list[dict[str, Any]],
    *,
    name: str = "checkout errors",
    group_by: tuple[str, ...] = ("service_name",),
) -> AlertRule:
    """A rule as the API stores it: ≥ 5 ERROR entries in 5 minutes, per service."""
    rule_id = uuid.uuid4()
    db.execute(
        "INSERT INTO log_alerts (id, tenant_id, name, filter, threshold, window_mins, "
        "severity, channels, group_by) VALUES (%s, %s, %s, %s, 5, 5, 'critical', %s, %s)",
        (rule_id, TENANT, name, Jsonb({"level": "ERROR"}), Jsonb(channels), list(group_by)),
    )
    row = db.execute(f"SELECT {RULE_COLUMNS} FROM log_alerts WHERE id = %s", (rule_id,))
    return rule_from_row(row.fetchone())


def change(
    rule: AlertRule, kind: str = "firing", count: int = 7, group: GroupKey = CHECKOUT
) -> StateChange:
    window = Window.ending_at(datetime(2025, 3, 4, 10, 5, 30, tzinfo=UTC), rule.window_mins)
    started = window.end
    resolved = window.end + timedelta(minutes=3) if kind == "resolved" else None
    return StateChange(rule, group, kind, count, window, started, resolved)  # type: ignore[arg-type]


async def record(settings: Settings, *changes: StateChange) -> list[uuid.UUID]:
    """Record state changes as the evaluator does (one transaction each); their event ids."""
    events = []
    async with await psycopg.AsyncConnection.connect(settings.postgres_conninfo()) as conn:
        for c in changes:
            async with conn.transaction():
                events.append(await record_change(conn, c, PUBLIC_URL))
    return events


def outbox(db: psycopg.Connection, event_id: uuid.UUID) -> list[dict[str, Any]]:
    cur = db.execute(
        "SELECT id, channel_index, status, attempts, last_error, sent_at, claimed_until, "
        "payload, now() AS db_now FROM alert_notifications WHERE event_id = %s "
        "ORDER BY channel_index",
        (event_id,),
    )
    names = [c.name for c in cur.description or []]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def settled(db: psycopg.Connection, event_id: uuid.UUID) -> list[dict[str, Any]] | None:
    """The event's outbox rows once none is pending."""
    rows = outbox(db, event_id)
    return rows if rows and all(r["status"] != "pending" for r in rows) else None


@dataclass
class Running:
    stop: asyncio.Event
    wake: asyncio.Event
    task: asyncio.Task[None]


@contextlib.asynccontextmanager
async def sender(
    settings: Settings, policy: DeliveryPolicy = FAST, *, pool_timeout: float = 1.0, **options: Any
) -> AsyncIterator[Running]:
    """run_sender as the evaluator runs it, with its own pool; stopped on exit."""
    pool = make_pool(settings, name="sender-test", min_size=0, max_size=4, timeout=pool_timeout)
    await pool.open()
    stop, wake = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(run_sender(settings, pool, stop, wake, policy=policy, **options))
    try:
        yield Running(stop, wake, task)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await pool.close()


# --- channels: what each receiver gets -----------------------------------------------


async def test_webhook_posts_the_payload_signed_and_named(settings, db) -> None:
    async with http_receiver() as receiver:
        rule = make_rule(
            db,
            [
                {"type": "webhook", "url": receiver.url + "/hook", "secret": SECRET},
                {"type": "webhook", "url": receiver.url + "/unsigned"},
            ],
        )
        (event_id,) = await record(settings, change(rule))
        async with sender(settings):
            requests = await receiver.wait_for(2)
            rows = await wait_until(lambda: settled(db, event_id), within=10, what="marked")

    signed = next(r for r in requests if r.path == "/hook")
    unsigned = next(r for r in requests if r.path == "/unsigned")
    assert signed.method == "POST"
    assert signed.headers["content-type"] == "application/json"
    assert signed.headers["x-minisource-notification-id"] == str(rows[0]["id"])
    assert signed.headers["x-minisource-event-id"] == str(event_id)
    assert verify_signature(SECRET, signed.headers["x-minisource-signature"], signed.body)
    assert not verify_signature(
        "another-secret-entirely", signed.headers["x-minisource-signature"], signed.body
    )
    assert not verify_signature(
        SECRET, signed.headers["x-minisource-signature"], signed.body + b" "
    )
    # The body is the stored payload as is: the event, the rule, the count, the link.
    body = json.loads(signed.body)
    assert body == rows[0]["payload"]
    assert body["event_id"] == str(event_id)
    assert body["status"] == "firing"
    assert body["alert"]["name"] == "checkout errors"
    assert body["observed_count"] == 7
    assert body["group"] == CHECKOUT
    assert body["link"].startswith(PUBLIC_URL + "/api/v1/logs?")
    assert "x-minisource-signature" not in unsigned.headers
    assert unsigned.headers["x-minisource-notification-id"] == str(rows[1]["id"])
    for row in rows:
        assert (row["status"], row["attempts"], row["last_error"]) == ("sent", 1, None)
        assert row["sent_at"] is not None and row["claimed_until"] is None


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"status":"firing"}'
    expected = hmac.new(b"k" * 16, b"1700000000." + body, hashlib.sha256).hexdigest()
    assert webhook.signature("k" * 16, 1_700_000_000, body) == f"t=1700000000,v1={expected}"


async def test_slack_gets_readable_text_with_the_link(settings, db) -> None:
    async with http_receiver() as receiver:
        rule = make_rule(db, [{"type": "slack", "url": receiver.url + "/services/T1/B2/x"}])
        (event_id,) = await record(settings, change(rule))
        async with sender(settings):
            (request,) = await receiver.wait_for(1)
            await wait_until(lambda: settled(db, event_id), within=10, what="marked")

    assert request.path == "/services/T1/B2/x"
    body = json.loads(request.body)
    assert list(body) == ["text"]
    link = outbox(db, event_id)[0]["payload"]["link"]
    assert body["text"] == (
        ":rotating_light: *FIRING* [critical] *checkout errors*\n"
        "Group: service_name=checkout\n"
        "Count: 7 entries in 5 min (fires at ≥ 5)\n"
        "Window: 2025-03-04 10:00:30 to 10:05:30 UTC\n"
        f"<{link}|Matching logs>"
    )


async def test_alertmanager_gets_one_alert_per_change(settings, db) -> None:
    async with http_receiver() as receiver:
        rule = make_rule(db, [{"type": "alertmanager", "url": receiver.url + "/am/"}])
        firing, resolved = await record(settings, change(rule), change(rule, "resolved", count=1))
        async with sender(settings):
            requests = await receiver.wait_for(2)
            await wait_until(lambda: settled(db, resolved), within=10, what="marked")

    by_event = {r.headers["x-minisource-event-id"]: r for r in requests}
    fired, ended = json.loads(by_event[str(firing)].body), json.loads(by_event[str(resolved)].body)
    assert {r.path for r in requests} == {"/am/api/v2/alerts"}
    assert len(fired) == 1 and len(ended) == 1
    alert = fired[0]
    link = outbox(db, firing)[0]["payload"]["link"]
    assert alert["labels"] == {
        "alertname": "checkout errors",
        "tenant": str(TENANT),
        "rule": str(rule.id),
        "severity": "critical",
        "service_name": "checkout",
    }
    assert alert["annotations"]["summary"] == "[FIRING] [critical] checkout errors"
    assert "Count: 7 entries in 5 min (fires at ≥ 5)" in alert["annotations"]["description"]
    assert alert["annotations"]["observed_count"] == "7"
    assert alert["annotations"]["link"] == link == alert["generatorURL"]
    assert alert["startsAt"] == "2025-03-04T10:05:30Z"
    # Firing: an end far ahead, so Alertmanager does not resolve it by itself.
    assert datetime.fromisoformat(alert["endsAt"]) > datetime.now(UTC) + timedelta(days=30)
    # Resolved: the same labels (the same alert to Alertmanager), ended at resolution.
    assert ended[0]["labels"] == alert["labels"]
    assert ended[0]["startsAt"] == "2025-03-04T10:05:30Z"
    assert ended[0]["endsAt"] == "2025-03-04T10:08:30Z"
    assert ended[0]["annotations"]["summary"] == "[RESOLVED] [critical] checkout errors"


async def test_email_goes_through_the_smtp_relay(settings, db) -> None:
    with smtp_receiver() as (smtp, port):
        config = replace(
            settings,
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_starttls=False,
            smtp_from="alerts@example.test",
        )
        rule = make_rule(db, [{"type": "email", "to": ["ops@example.test", "dev@example.test"]}])
        (event_id,) = await record(settings, change(rule))
        async with sender(config):
            (mail,) = await smtp.wait_for(1)
            rows = await wait_until(lambda: settled(db, event_id), within=10, what="marked")

    assert rows[0]["status"] == "sent"
    assert mail.mail_from == "alerts@example.test"
    assert mail.rcpt_tos == ["ops@example.test", "dev@example.test"]
    message = mail.message
    assert message["Subject"] == "[FIRING] [critical] checkout errors"
    assert message["To"] == "ops@example.test, dev@example.test"
    assert message["Message-ID"] == f"<{rows[0]['id']}@minisource-log>"
    assert message["X-Minisource-Notification-Id"] == str(rows[0]["id"])
    assert message["X-Minisource-Event-Id"] == str(event_id)
    assert message.get_content_type() == "text/plain"
    text = message.get_payload(decode=True).decode()
    for fact in (
        "Status:        FIRING",
        "Rule:          checkout errors",
        "Severity:      critical",
        "Group:         service_name=checkout",
        "Count:         7 entries in 5 min (fires at ≥ 5)",
        "Window:        2025-03-04 10:00:30 to 10:05:30 UTC",
        f"Matching logs: {rows[0]['payload']['link']}",
    ):
        assert fact in text, (fact, text)


async def test_email_uses_starttls_and_logs_in(settings, db, tmp_path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    with smtp_receiver(tls=server_tls, login=("mailer", "relay-password")) as (smtp, port):
        config = replace(
            settings,
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_starttls=True,
            smtp_user="mailer",
            smtp_password="relay-password",
        )
        rule = make_rule(db, [{"type": "email", "to": ["ops@example.test"]}])
        (event_id,) = await record(settings, change(rule))
        async with sender(config, smtp_tls=client_tls):
            (mail,) = await smtp.wait_for(1)
            rows = await wait_until(lambda: settled(db, event_id), within=10, what="marked")
    assert rows[0]["status"] == "sent"
    assert mail.authenticated_as == "mailer"


async def test_email_without_smtp_host_fails_at_once(settings, db) -> None:
    rule = make_rule(db, [{"type": "email", "to": ["ops@example.test"]}])
    (event_id,) = await record(settings, change(rule))
    async with sender(replace(settings, smtp_host="")):
        (row,) = await wait_until(lambda: settled(db, event_id), within=10, what="marked")
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert "SMTP_HOST" in row["last_error"]


# --- retries and failures -------------------------------------------------------------


async def test_receiver_failing_twice_then_accepting_gets_it_once(settings, db) -> None:
    async with http_receiver(answers(500, 500)) as receiver:
        rule = make_rule(db, [{"type": "webhook", "url": receiver.url, "secret": SECRET}])
        (event_id,) = await record(settings, change(rule))
        async with sender(settings):
            (row,) = await wait_until(lambda: settled(db, event_id), within=10, what="marked")
            await asyncio.sleep(0.3)  # a few polls: nothing more is sent
    assert len(receiver.requests) == 3
    assert (row["status"], row["attempts"]) == ("sent", 3)
    assert row["last_error"].startswith("HTTP 500")  # why it took three tries
    assert len(receiver.by_notification()) == 1
    for r in receiver.requests:  # each try is signed anew, and each signature holds
        assert verify_signature(SECRET, r.headers["x-minisource-signature"], r.body)


@pytest.mark.parametrize("status", [408, 429, 502, 503])
async def test_transient_answers_are_retried(settings, db, status) -> None:
    async with http_receiver(answers(status)) as receiver:
        rule = make_rule(db, [{"type": "webhook", "url": receiver.url}])
        (event_id,) = await record(settings, change(rule))
        async with sender(settings):
            (row,) = await wait_until(lambda: settled(db, event_id), within=10, what="marked")
    assert (row["status"], row["attempts"], len(receiver.requests)) == ("sent", 2, 2)


@pytest.mark.parametrize("status", [400, 401, 404, 410, 301])
async def test_a_refusal_fails_at_once(settings, db, status) -> None:
    async with http_receiver(answers(status)) as receiver:
        rule = make_rule(db, [{"type": "webhook", "url": receiver.url}])
        (event_id,) = await record(settings, change(rule))
        async with sender(settings):
            (row,) = await wait_until(lambda: settled(db, event_id), within=10, what="marked")
            await asyncio.sleep(0.3)
    assert (row["status"], row["attempts"], len(receiver.requests)) == ("failed", 1, 1)
    assert row["last_error"].startswith(f"HTTP {status}")
    assert row["sent_at"] is None


async def test_exhausted_attempts_are_recorded_as_failed(settings, db) -> None:
    async def always_503(index: int, request: Request) -> int:
        return 503

    async with http_receiver(always_503) as receiver:
        rule = make_rule(db, [{"type": "webhook", "url": receiver.url}])
        (event_id,) = await record(settings, change(rule))
        async with sender(settings, replace(FAST, max_attempts=4)):
            (row,) = await wait_until(lambda: settled(db, event_id), within=10, what="marked")
            await asyncio.sleep(0.3)
    assert (row["status"], row["attempts"], len(receiver.requests)) == ("failed", 4, 4)
    assert row["last_error"] == "HTTP 503 Service Unavailable: answered 503"


async def test_unreachable_receiver_is_retried_then_failed(settings, db) -> None:
    async with http_receiver() as receiver:
        url = receiver.url  # closed on leaving: nothing listens there any more
    rule = make_rule(db, [{"type": "webhook", "url": url}])
    (event_id,) = await record(settings, change(rule))
    async with sender(settings, replace(FAST, max_attempts=2)):
        (row,) = await wait_until(lambda: settled(db, event_id), within=10, what="marked")
    assert (row["status"], row["attempts"]) == ("failed", 2)
    assert row["last_error"].startswith("connection failed: ConnectError")


async def test_a_hanging_receiver_times_out_within_the_channel_timeout(settings, db) -> None:
    hang = asyncio.Event()

    async def hanging(index: int, request: Request) -> int:
        await hang.wait()
        return 200

    async with http_receiver(hanging) as receiver:
        rule = make_rule(db, [{"type": "webhook", "url": receiver.url, "timeout_seconds": 0.3}])
        (event_id,) = await record(settings, change(rule))
        async with sender(settings, replace(FAST, max_attempts=1)):
            (row,) = await wait_until(lambda: settled(db, event_id), within=10, what="marked")
        hang.set()
    assert (row["status"], row["last_error"]) == ("failed", "no answer within 0.3 s")


def test_retry_delays_grow_with_jitter_up_to_the_cap() -> None:
    policy = DeliveryPolicy(retry_base_seconds=2.0, retry_cap_seconds=300.0)
    for attempts, ceiling in [(1, 2.0), (2, 4.0), (5, 32.0), (9, 300.0), (40, 300.0)]:
        delays = [policy.retry_delay(attempts) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), (attempts, min(delays))
        assert max(delays) - min(delays) > ceiling / 10  # jittered, not all alike
    # A receiver's Retry-After is honoured, up to the cap.
    assert policy.retry_delay(1, retry_after=60) == 60
    assert policy.retry_delay(1, retry_after=10_000) == 300


# --- several senders, dead senders, outages ------------------------------------------


async def test_one_groups_notifications_reach_a_channel_in_order(settings, db) -> None:
    refusals = 2

    async def refuse_checkout_firing_twice(index: int, request: Request) -> int:
        nonlocal refusals
        body = json.loads(request.body)
        if body["status"] == "firing" and body["group"] == CHECKOUT and refusals:
            refusals -= 1
            return 503
        return 200

    async with http_receiver(refuse_checkout_firing_twice) as receiver:
        rule = make_rule(db, [{"type": "webhook", "url": receiver.url}])
        # Firing is refused twice (retried); the resolved one, due at once, must wait.
        firing, resolved = await record(settings, change(rule), change(rule, "resolved", 1))
        (other,) = await record(settings, change(rule, group={"service_name": "cart"}))
        async with sender(settings):
            await wait_until(lambda: settled(db, resolved), within=10, what="marked")
            await wait_until(lambda: settled(db, other), within=10, what="marked")
    sent = [r.headers["x-minisource-event-id"] for r in receiver.requests]
    assert sent.index(str(other)) < 3  # another group is not held up
    order = [e for e in sent if e != str(other)]
    assert order == [str(firing)] * 3 + [str(resolved)]


async def test_two_senders_deliver_each_of_50_rows_exactly_once(settings, db) -> None:
    async def slow_200(index: int, request: Request) -> int:
        await asyncio.sleep(0.01)  # both senders have sends in flight together
        return 200

    async with http_receiver(slow_200) as receiver:
        rule = make_rule(db, [{"type": "webhook", "url": receiver.url}])
        # 50 groups: one group's notifications go out in order, these all at once.
        groups = [{"service_name": f"svc-{i}"} for i in range(50)]
        events = await record(settings, *(change(rule, group=g) for g in groups))
        small = replace(FAST, concurrency=4)
        async with sender(settings, small), sender(settings, small):
            await receiver.wait_for(50)
            await wait_until(
                lambda: db.execute(
                    "SELECT count(*) = 50 FROM alert_notifications WHERE status = 'sent'"
                ).fetchone()[0],
                within=20,
                what="all 50 marked sent",
            )
            await asyncio.sleep(0.3)
    counts = receiver.by_notification()
    assert len(counts) == 50 and set(counts.values()) == {1}, counts
    assert {json.loads(r.body)["event_id"] for r in receiver.requests} == {str(e) for e in events}
    assert db.execute("SELECT max(attempts) FROM alert_notifications").fetchone()[0] == 1


async def test_sender_killed_mid_send_is_resent_after_the_lease_once(
    settings, db, tmp_path
) -> None:
    first_arrived = asyncio.Event()
    release_first = asyncio.Event()

    async def first_hangs(index: int, request: Request) -> int:
        if index == 0:
            first_arrived.set()
            await release_first.wait()  # never answered: its sender is killed meanwhile
        return 200

    lease = 2.0
    async with http_receiver(first_hangs) as receiver:
        rule = make_rule(db, [{"type": "webhook", "url": receiver.url, "secret": SECRET}])
        (event_id,) = await record(settings, change(rule))
        env = service_env(settings, TEST_SENDER_LEASE_SECONDS=str(lease))
        with Service("tests.alert_sender_child", env, tmp_path, name="sender") as child:
            try:
                await asyncio.wait_for(first_arrived.wait(), 20)
            except TimeoutError:
                raise AssertionError(child.output()[-3000:]) from None
            child.kill()  # SIGKILL between claim and mark
        (row,) = outbox(db, event_id)
        assert (row["status"], row["attempts"]) == ("pending", 1)
        lease_end = row["claimed_until"]
        assert lease_end > row["db_now"]

        async with sender(settings, replace(FAST, lease_seconds=lease)):
            requests = await receiver.wait_for(2, within=lease + 10)
            (row,) = await wait_until(lambda: settled(db, event_id), within=10, what="marked")
            await asyncio.sleep(lease + 0.5)  # past another lease: no third delivery
        release_first.set()

    assert len(receiver.requests) == 2
    assert (row["status"], row["attempts"]) == ("sent", 2)
    # Resent only once the dead sender's lease had run out.
    assert requests[1].at >= lease_end.timestamp() - 0.05
    # Both requests name the same notification: a receiver can drop the repeat.
    assert len({r.headers["x-minisource-notification-id"] for r in requests}) == 1
    assert requests[0].body == requests[1].body


async def test_stop_waits_for_sends_in_flight_then_leaves_the_rest_to_the_lease(
    settings, db
) -> None:
    hang = asyncio.Event()

    async def first_fast_then_hang(index: int, request: Request) -> int:
        if json.loads(request.body)["observed_count"] != 5:
            await hang.wait()
        else:
            await asyncio.sleep(0.2)  # finishes within the grace
        return 200

    async with http_receiver(first_fast_then_hang) as receiver:
        rule = make_rule(db, [{"type": "webhook", "url": receiver.url}])
        quick, stuck = await record(settings, change(rule, count=5), change(rule, count=6))
        async with sender(settings, replace(FAST, shutdown_grace_seconds=0.5)) as running:
            await receiver.wait_for(2)
            running.stop.set()
            started = time.monotonic()
            await asyncio.wait_for(running.task, 5)
            assert time.monotonic() - started < 2
        hang.set()
    assert outbox(db, quick)[0]["status"] == "sent"
    (row,) = outbox(db, stuck)
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert row["claimed_until"] > row["db_now"]  # another sender takes it after the lease


async def test_wake_delivers_without_waiting_for_the_poll(settings, db) -> None:
    async with http_receiver() as receiver:
        rule = make_rule(db, [{"type": "webhook", "url": receiver.url}])
        async with sender(settings, replace(FAST, poll_seconds=60)) as running:
            await asyncio.sleep(0.2)  # the sender has looked once and is waiting
            (event_id,) = await record(settings, change(rule))
            running.wake.set()
            await receiver.wait_for(1, within=5)
            await wait_until(lambda: settled(db, event_id), within=5, what="marked")


async def test_sender_rides_out_a_postgres_outage(settings, db, caplog) -> None:
    proxy = TcpProxy(settings.postgres_port)
    await proxy.start()
    behind_proxy = replace(settings, postgres_host="127.0.0.1", postgres_port=proxy.port)
    caplog.set_level(logging.INFO, logger="evaluator.sender")
    try:
        async with http_receiver() as receiver:
            rule = make_rule(db, [{"type": "webhook", "url": receiver.url}])
            async with sender(behind_proxy) as running:
                (first,) = await record(settings, change(rule))
                await receiver.wait_for(1)
                await wait_until(lambda: settled(db, first), within=10, what="first marked")

                proxy.cut()  # PostgreSQL "restarts": connections drop, new ones refused
                (second,) = await record(settings, change(rule, count=8))
                await wait_until(
                    lambda: "notification sender paused" in caplog.text,
                    within=10,
                    what="the sender to notice the outage",
                )
                assert not running.task.done(), "the sender must ride out the outage"
                assert outbox(db, second)[0]["status"] == "pending"

                proxy.restore()
                await receiver.wait_for(2, within=15)
                await wait_until(lambda: settled(db, second), within=10, what="second marked")
                assert "notification sender resumed" in caplog.text
    finally:
        await proxy.close()


async def test_stop_is_prompt_while_postgres_is_away(settings) -> None:
    proxy = TcpProxy(settings.postgres_port)
    await proxy.start()
    proxy.cut()
    behind_proxy = replace(settings, postgres_host="127.0.0.1", postgres_port=proxy.port)
    try:
        # The pool would wait 30 s for a connection; stopping does not.
        async with sender(behind_proxy, pool_timeout=30.0) as running:
            await asyncio.sleep(0.3)
            running.stop.set()
            await asyncio.wait_for(running.task, 2)
    finally:
        await proxy.close()


async def test_no_secret_or_url_path_reaches_the_logs(settings, db, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    async with http_receiver(answers(500)) as receiver:
        url = receiver.url + "/services/T1/B2/slack-credential"
        rule = make_rule(
            db,
            [
                {"type": "webhook", "url": url, "secret": SECRET},
                {"type": "slack", "url": url},
            ],
        )
        (event_id,) = await record(settings, change(rule))
        async with sender(settings):
            rows = await wait_until(lambda: settled(db, event_id), within=10, what="marked")
    assert [r["status"] for r in rows] == ["sent", "sent"]
    assert SECRET not in caplog.text
    assert "slack-credential" not in caplog.text
    assert all("slack-credential" not in (r["last_error"] or "") for r in rows)
