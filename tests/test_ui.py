"""The web explorer in a real browser: Debian's chromium, driven by Playwright, against a
gateway and a writer started for this module (api_key mode, three tenants).

One browser serves the whole module; each test has its own browser context (its own
sessionStorage), signs in as a user would, and leaves a screenshot in
`test-artifacts/ui/` (or UI_ARTIFACTS_DIR). Every request the pages make is checked to
go to the gateway itself: anything else is refused and fails the test.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, Page, Route, expect, sync_playwright

from shared.settings import Settings
from tests.conftest import clone_database, drop_database, drop_keys
from tests.processes import REPO, Service, free_port, service_env, wait_ready

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("UI_ARTIFACTS_DIR", REPO / "test-artifacts" / "ui"))
ADMIN_KEY = "ui-test-admin-key-" + "0123456789abcdef"
XSS = "<img src=x onerror=alert(1)>"
TRACE_ID = "trace-ui-7f3a"
REQUEST_ID = "req-ui-19"
# The gateways these tests start; any other address is "elsewhere".
LOCAL = "http://127.0.0.1:"

expect.set_options(timeout=10_000)


@dataclass
class Tenant:
    id: uuid.UUID
    key: str
    key_id: str = ""
    messages: list[str] = field(default_factory=list)


@dataclass
class Explorer:
    url: str
    settings: Settings
    a: Tenant
    b: Tenant
    c: Tenant

    def post(self, tenant: Tenant, entries: list[dict[str, Any]]) -> None:
        response = httpx.post(
            f"{self.url}/api/v1/logs/batch",
            json={"entries": entries},
            headers={"Authorization": f"Bearer {tenant.key}"},
        )
        assert response.status_code == 202, response.text
        tenant.messages.extend(e["message"] for e in entries)

    def stored(self, tenant: Tenant) -> int:
        with psycopg.connect(self.settings.postgres_conninfo(), autocommit=True) as db:
            row = db.execute(
                "SELECT count(*) FROM log_entries WHERE tenant_id = %s", (tenant.id,)
            ).fetchone()
        assert row is not None
        return int(row[0])


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _entry(service: str, level: str, message: str, at: datetime, **extra: Any) -> dict[str, Any]:
    return {
        "service_name": service,
        "level": level,
        "message": message,
        "timestamp": _iso(at),
        **extra,
    }


def _tenant_a_entries(now: datetime) -> list[dict[str, Any]]:
    """Ten entries: three 50 minutes ago, seven about 5 minutes ago (a trace of three
    services among them, and a hostile message)."""
    old = now - timedelta(minutes=50)
    recent = now - timedelta(minutes=5)
    t0 = recent + timedelta(seconds=10)
    trace = [
        _entry(
            "api-gateway", "INFO", "request received", t0, trace_id=TRACE_ID, request_id=REQUEST_ID
        ),
        _entry(
            "payments",
            "INFO",
            "charge started",
            t0 + timedelta(milliseconds=120),
            trace_id=TRACE_ID,
            request_id=REQUEST_ID,
        ),
        _entry(
            "checkout", "ERROR", "order failed", t0 + timedelta(milliseconds=350), trace_id=TRACE_ID
        ),
    ]
    # Sent out of order: the trace view orders them by time.
    random.Random(7).shuffle(trace)
    return [
        *(
            _entry("checkout", "INFO", f"cart loaded {i}", old + timedelta(seconds=i))
            for i in range(3)
        ),
        _entry("payments", "ERROR", "charge failed: connection refused by bank", recent),
        _entry("payments", "WARN", "retrying charge", recent + timedelta(seconds=1)),
        _entry("checkout", "INFO", "order placed", recent + timedelta(seconds=2)),
        *trace,
        _entry(
            "web",
            "WARN",
            XSS,
            recent + timedelta(seconds=20),
            metadata={"html": "<script>alert(2)</script>"},
        ),
    ]


def _admin(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{url}{path}", json=body, headers={"Authorization": f"Bearer {ADMIN_KEY}"}
    )
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def _make_tenant(url: str, name: str) -> Tenant:
    tenant_id = uuid.uuid4()
    _admin(url, "/api/v1/admin/tenants", {"name": name, "id": str(tenant_id)})
    made = _admin(
        url,
        "/api/v1/admin/keys",
        {"tenant_id": str(tenant_id), "scopes": ["ingest", "query", "alerts"]},
    )
    return Tenant(tenant_id, made["key"], key_id=made["id"])


@pytest.fixture(scope="module")
def explorer(
    base_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Explorer]:
    suffix = uuid.uuid4().hex[:12]
    port = free_port()
    settings = replace(
        base_settings,
        postgres_db=f"mlog_ui_{suffix}",
        redis_key_prefix=f"test-ui-{suffix}",
        auth_mode="api_key",
        admin_api_key=ADMIN_KEY,
        server_port=port,
        writer_batch_wait_ms=20,
        metrics_port=0,
    )
    clone_database(base_settings, settings.postgres_db)
    env = service_env(settings)
    logs = tmp_path_factory.mktemp("ui-services")
    try:
        with (
            Service("services.gateway", env, logs) as gateway,
            Service("services.writer", env, logs),
        ):
            url = f"http://127.0.0.1:{port}"
            wait_ready(gateway, url)
            ui = Explorer(url, settings, *(_make_tenant(url, n) for n in ("ui-a", "ui-b", "ui-c")))
            now = datetime.now(UTC)
            ui.post(ui.a, _tenant_a_entries(now))
            ui.post(
                ui.b,
                [_entry("payments", "ERROR", "other-tenant-secret", now - timedelta(minutes=3))],
            )
            for tenant in (ui.a, ui.b):
                _await_stored(ui, tenant, len(tenant.messages))
            yield ui
    finally:
        drop_database(base_settings, settings.postgres_db)
        drop_keys(settings)


def _await_stored(ui: Explorer, tenant: Tenant, count: int) -> None:
    """Until the writer (working on its own) has committed `count` rows of the tenant."""
    deadline = time.monotonic() + 30
    while ui.stored(tenant) < count:
        assert time.monotonic() < deadline, f"{count} rows of {tenant.id} not stored in 30 s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        # Debian's chromium, never a downloaded build; as root it needs --no-sandbox, and
        # in a container a small /dev/shm would crash it.
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser, explorer: Explorer, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    foreign: list[str] = []
    dialogs: list[str] = []

    def only_the_gateway(route: Route) -> None:
        if route.request.url.startswith(LOCAL):
            route.continue_()
        else:
            foreign.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_gateway)
    page = context.new_page()
    page.set_default_timeout(10_000)
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    try:
        yield page
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(Exception):
            page.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
        context.close()
    assert not foreign, f"the page fetched from elsewhere: {foreign}"
    assert not dialogs, f"a script ran a dialog: {dialogs}"


def sign_in(page: Page, ui: Explorer, key: str, path: str = "/") -> None:
    page.goto(ui.url + path)
    page.fill("#signin-key", key)
    page.click("button:text('Sign in')")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def rows(page: Page) -> Any:
    return page.locator(".results .entry")


def test_root_redirects_to_the_explorer_whose_files_carry_a_csp(explorer: Explorer) -> None:
    root = httpx.get(f"{explorer.url}/", follow_redirects=False)
    assert root.status_code == 302
    assert root.headers["location"] == "/ui/"
    for path, media_type in [
        ("/ui/", "text/html"),
        ("/ui/main.js", "text/javascript"),
        ("/ui/ui.css", "text/css"),
    ]:
        response = httpx.get(explorer.url + path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(media_type)
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-content-type-options"] == "nosniff"
    # Nothing but the listed files: no path leaves the directory, whatever it spells.
    for path in ["/ui/routes.py", "/ui/..%2Froutes.py", "/ui/nothing.js", "/ui/%2e%2e"]:
        response = httpx.get(explorer.url + path)
        assert response.status_code == 404, path
        assert response.headers["content-type"].startswith("application/"), path


def test_sign_in_shows_the_tenants_logs_newest_first_and_no_other_tenants(
    page: Page, explorer: Explorer
) -> None:
    sign_in(page, explorer, explorer.a.key)
    expect(page).to_have_url(re.compile(r"/ui/"))
    expect(rows(page)).to_have_count(10)
    expect(page.locator(".results-summary")).to_contain_text("10 shown of 10 matching")
    expect(rows(page).first.locator(".message")).to_have_text(XSS)  # the newest
    expect(rows(page).last.locator(".message")).to_have_text("cart loaded 0")
    assert "other-tenant-secret" not in page.content()

    page.click("button:text('Sign out')")
    sign_in(page, explorer, explorer.b.key)
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first.locator(".message")).to_have_text("other-tenant-secret")
    assert "order placed" not in page.content()
    # The key never appears in a URL.
    assert explorer.b.key not in page.url


def test_trusted_header_mode_signs_in_with_a_tenant_id(
    page: Page, explorer: Explorer, tmp_path: Path
) -> None:
    port = free_port()
    settings = replace(explorer.settings, auth_mode="trusted_header", server_port=port)
    with Service("services.gateway", service_env(settings), tmp_path) as gateway:
        url = f"http://127.0.0.1:{port}"
        wait_ready(gateway, url)
        page.goto(url + "/")
        page.fill("#signin-tenant", str(explorer.a.id))
        page.click("button:text('Sign in')")
        expect(rows(page)).to_have_count(10)
        assert "other-tenant-secret" not in page.content()


def test_a_bad_key_shows_the_problem_detail(page: Page, explorer: Explorer) -> None:
    page.goto(explorer.url + "/ui/")
    page.fill("#signin-key", "mlk_" + "x" * 43)
    page.click("button:text('Sign in')")
    expect(page.get_by_role("alert")).to_contain_text("the API key is unknown or revoked")
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)


def test_a_revoked_key_is_told_and_can_sign_in_again(page: Page, explorer: Explorer) -> None:
    tenant = _make_tenant(explorer.url, "ui-revoked")
    sign_in(page, explorer, tenant.key)
    expect(page.locator(".results-summary")).to_contain_text("No entries match")
    revoked = httpx.post(
        f"{explorer.url}/api/v1/admin/keys/{tenant.key_id}/revoke",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert revoked.status_code == 200, revoked.text
    page.click("button:text('Refresh')")
    alert = page.locator(".results").get_by_role("alert")
    expect(alert).to_contain_text("the API key is unknown or revoked")
    alert.get_by_role("button", name="Sign in again").click()
    expect(page.locator("#signin-key")).to_be_visible()


def test_filters_by_level_and_service_live_in_the_url(page: Page, explorer: Explorer) -> None:
    sign_in(page, explorer, explorer.a.key)
    expect(rows(page)).to_have_count(10)
    page.check("input[name=levels][value=ERROR]")
    page.click("button:text('Run')")
    expect(page).to_have_url(re.compile(r"levels=ERROR"))
    expect(rows(page)).to_have_count(2)
    for level in rows(page).locator(".level").all_text_contents():
        assert level == "ERROR"
    # A facet narrows further: the service, clicked.
    page.locator(".facets button.facet-value", has_text="payments").click()
    expect(page).to_have_url(re.compile(r"services=payments"))
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first.locator(".message")).to_have_text(
        "charge failed: connection refused by bank"
    )
    # The URL is the view: opened afresh (same tab, still signed in), it shows the same.
    page.goto(page.url)
    expect(rows(page)).to_have_count(1)


def test_search_words_and_a_phrase(page: Page, explorer: Explorer) -> None:
    sign_in(page, explorer, explorer.a.key)
    page.fill("#q-search", "charge")
    page.press("#q-search", "Enter")
    expect(rows(page)).to_have_count(3)
    page.fill("#q-search", '"connection refused"')
    page.press("#q-search", "Enter")
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first.locator(".message")).to_have_text(
        "charge failed: connection refused by bank"
    )
    # A value of the expanded entry, clicked, becomes a filter.
    rows(page).first.locator(".entry-summary").click()
    page.locator(".entry-details .fields button", has_text="ERROR").click()
    expect(page).to_have_url(re.compile(r"levels=ERROR"))
    expect(page.locator("input[name=levels][value=ERROR]")).to_be_checked()
    expect(rows(page)).to_have_count(1)
    page.fill("#q-search", '"refused connection"')
    page.press("#q-search", "Enter")
    expect(page.locator(".results-summary")).to_contain_text("No entries match")


def test_histogram_counts_every_entry_and_dragging_narrows_the_range(
    page: Page, explorer: Explorer
) -> None:
    sign_in(page, explorer, explorer.a.key)
    expect(page.get_by_test_id("histogram-total")).to_have_text("10")
    chart = page.locator(".histogram-chart")
    box = chart.bounding_box()
    assert box is not None
    y = box["y"] + box["height"] / 2
    # The last ~15 % of the hour: the seven recent entries, not the three 50 min old.
    page.mouse.move(box["x"] + box["width"] * 0.85, y)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.95, y, steps=4)
    page.mouse.move(box["x"] + box["width"] - 1, y, steps=2)
    page.mouse.up()
    expect(page).to_have_url(re.compile(r"start_time=.*end_time="))
    assert "range=" not in page.url
    expect(page.get_by_test_id("histogram-total")).to_have_text("7")
    expect(rows(page)).to_have_count(7)
    expect(page.locator("#q-start_time")).not_to_have_value("")


def test_live_tail_shows_a_new_entry_and_resumes_after_a_pause(
    page: Page, explorer: Explorer
) -> None:
    c = explorer.c
    sign_in(page, explorer, c.key)
    page.click("button:text('Live tail')")
    status = page.get_by_test_id("tail-status")
    expect(status).to_have_text("Live")
    tail = page.locator(".results .tail .entry")
    explorer.post(c, [_entry("tailer", "ERROR", "tail one", datetime.now(UTC))])
    expect(tail.filter(has_text="tail one")).to_be_visible(timeout=2_000)

    page.click("button:text('Pause')")
    expect(status).to_have_text("Paused")
    explorer.post(c, [_entry("tailer", "INFO", "tail two", datetime.now(UTC))])
    _await_stored(explorer, c, 2)
    assert tail.filter(has_text="tail two").count() == 0
    page.click("button:text('Resume')")
    # Resumed with Last-Event-ID: what came during the pause arrives, nothing twice.
    expect(tail.filter(has_text="tail two")).to_be_visible(timeout=2_000)
    expect(tail).to_have_count(2)
    expect(tail.first.locator(".message")).to_have_text("tail two")


def test_live_tail_shows_the_servers_dropped_notice(page: Page, explorer: Explorer) -> None:
    # A resume point the server does not know (as after a restore of an older database):
    # the stream says so with a `dropped` event and goes on from now.
    def ahead(route: Route) -> None:
        route.continue_(headers={**route.request.headers, "last-event-id": "999999"})

    page.route("**/api/v1/logs/stream*", ahead)
    sign_in(page, explorer, explorer.c.key, "/ui/?tail=1")
    expect(page.get_by_test_id("tail-dropped")).to_contain_text("unknown_position")
    expect(page.get_by_test_id("tail-status")).to_have_text("Live")


def test_the_trace_view_lists_the_traces_entries_in_order(page: Page, explorer: Explorer) -> None:
    sign_in(page, explorer, explorer.a.key)
    rows(page).filter(has_text="charge started").locator(".entry-summary").click()
    page.click("button:text('Open trace')")
    expect(page).to_have_url(re.compile(rf"view=trace&id={TRACE_ID}"))
    entries = page.locator(".trace-entry")
    expect(entries).to_have_count(3)
    expect(entries.locator("td.message")).to_have_text(
        ["request received", "charge started", "order failed"]
    )
    # One lane per service, and the time from the first entry.
    expect(page.locator(".trace-table thead th.lane")).to_have_text(
        ["api-gateway", "payments", "checkout"]
    )
    expect(entries.nth(2).locator("td.num").first).to_have_text("+350.0 ms")
    # The request view: the entries of one request_id, from a row of the trace.
    entries.first.click()
    page.click("button:text('Open request')")
    expect(page).to_have_url(re.compile(rf"view=request&id={REQUEST_ID}"))
    expect(page.locator(".trace-entry td.message")).to_have_text(
        ["request received", "charge started"]
    )


def test_the_explorer_never_writes_markup() -> None:
    """Log content reaches the page only as text: no script assigns HTML anywhere."""
    static = REPO / "services" / "gateway" / "ui" / "static"
    sinks = re.compile(r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write|\beval\(")
    for script in static.glob("*.js"):
        code = "\n".join(
            line for line in script.read_text().splitlines() if not line.strip().startswith("//")
        )
        assert not sinks.search(code), script.name


def test_a_hostile_message_renders_as_text(page: Page, explorer: Explorer) -> None:
    sign_in(page, explorer, explorer.a.key)
    page.fill("#q-search", "onerror")
    page.press("#q-search", "Enter")
    expect(rows(page)).to_have_count(1)
    rows(page).first.locator(".entry-summary").click()
    expect(rows(page).first.locator(".message")).to_have_text(XSS)
    expect(page.locator(".entry-details .json")).to_contain_text("<script>alert(2)</script>")
    assert page.locator("main img, main script").count() == 0
    assert page.evaluate("document.querySelectorAll('img[src=x]').length") == 0
    # The same page in dark mode, for the artifacts.
    page.emulate_media(color_scheme="dark")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dark-mode.png"), full_page=True)


def test_operations_show_services_storage_and_alert_rules(page: Page, explorer: Explorer) -> None:
    sign_in(page, explorer, explorer.a.key, "/ui/?levels=ERROR")
    page.click("button.nav:text('Operations')")
    expect(page.locator(".ops-section table.data").first).to_contain_text("payments")
    expect(page.locator("dl.facts").first).to_contain_text("10")
    # A rule from the current query (levels=ERROR), then disabled, then its events.
    page.fill("form.alert-form input[name=name]", "errors at 3 a.m.")
    page.click("button:text('Create rule')")
    rule = page.locator("tr.alert-rule", has_text="errors at 3 a.m.")
    expect(rule).to_contain_text('"levels":["ERROR"]')
    expect(rule).to_contain_text("enabled")
    rule.locator("button:text('Disable')").click()
    expect(rule).to_contain_text("disabled")
    rule.locator("button:text('Events')").click()
    expect(page.locator("text=No events yet.")).to_be_visible()
    # Retention needs the admin scope: the page says so in the API's words.
    expect(page.locator(".ops-section", has_text="Retention").get_by_role("alert")).to_contain_text(
        "admin"
    )


def test_the_api_docs_page_loads_offline(page: Page, explorer: Explorer) -> None:
    page.goto(explorer.url + "/schema/swagger")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Minisource Log")


def test_an_admin_key_acting_for_a_tenant_sets_its_retention(
    page: Page, explorer: Explorer
) -> None:
    page.goto(explorer.url + "/ui/?view=ops")
    page.fill("#signin-key", ADMIN_KEY)
    page.fill("#signin-tenant", str(explorer.a.id))
    page.click("button:text('Sign in')")
    retention = page.locator(".ops-section", has_text="Retention")
    expect(retention).to_contain_text("the deployment's defaults")
    retention.locator("input[name=retention_days]").fill("7")
    retention.locator("button:text('Set a policy')").click()
    expect(retention).to_contain_text("the tenant's own")
    expect(retention).to_contain_text("7 days")
    policy = httpx.get(
        f"{explorer.url}/api/v1/retention/tenant/{explorer.a.id}",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    ).json()
    assert (policy["is_default"], policy["retention_days"]) == (False, 7)
