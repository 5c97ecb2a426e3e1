"""Security as an attacker and an operator see it: keys and sessions on every route, rate limits on
ingestion, weak secrets refused at start, and no secret in any log of a real server or worker."""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select

from qualify.adapters import schema
from qualify.domain.access import Role
from qualify.entrypoints.api import create_app
from qualify.entrypoints.api.routes import (
    admin,
    automation,
    email_tracking,
    events,
    leads,
    models,
    operations,
    tracking,
    webhooks,
)
from qualify.entrypoints.ratelimit import TokenBucket
from qualify.entrypoints.web import router as dashboard_router
from qualify.service.admin.api_keys import create_key
from qualify.service.admin.users import add_user, placeholder_password, weak_secret
from qualify.service.unit_of_work import Workspace
from tests.conftest import key_for
from tests.dashboard_world import PASSWORD, world
from tests.e2e.test_serve import SCRIPT, free_port, run

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def event(n: int, email: str = "jane@acme.com", kind: str = "page_view") -> dict[str, Any]:
    return {"event_id": f"e{n}", "type": kind, "occurred_at": T0.isoformat(), "email": email, "properties": {}}


class Clock:
    """A clock the test moves by hand: nothing sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- the token bucket ------------------------------------------------------------------------------


def test_a_bucket_admits_its_burst_then_refills_at_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=10, burst=100, clock=clock)
    assert bucket.take("k", 60).allowed and bucket.take("k", 40).allowed
    refused = bucket.take("k", 30)
    assert not refused.allowed and refused.retry_after == pytest.approx(3.0) and refused.remaining == 0
    clock.now += 2.9
    assert not bucket.take("k", 30).allowed  # 29 tokens: a refused request takes nothing
    clock.now += 0.1
    assert bucket.take("k", 30).allowed
    clock.now += 3600 * 24  # never more than the burst, however long the key was idle
    assert bucket.take("k", 100).allowed and not bucket.take("k", 1).allowed


def test_a_batch_costs_one_token_per_event_and_keys_do_not_share() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=1, burst=500, clock=clock)
    assert bucket.take("a", 500).allowed
    assert not bucket.take("a", 1).allowed  # 500 events in one batch spent it as 500 single ones would
    assert bucket.take("b", 500).allowed  # another key has its own bucket
    never = bucket.take("c", 501)  # more than the burst can never pass: it says so, and takes nothing
    assert not never.allowed and math.isinf(never.retry_after)
    assert bucket.take("c", 500).allowed


def test_a_bucket_is_exact_under_concurrent_takers() -> None:
    bucket = TokenBucket(rate=1, burst=1000, clock=Clock())  # a frozen clock: nothing refills
    admitted = [0] * 8

    def take(i: int) -> None:
        for _ in range(500):
            admitted[i] += bucket.take("shared", 1).allowed

    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(admitted) == 1000


def test_idle_keys_are_forgotten() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=1, burst=10, clock=clock)
    for key in range(100):
        bucket.take(f"k{key}", 1)
    assert len(bucket) == 100
    clock.now += 3601
    bucket.take("fresh", 1)
    assert len(bucket) == 1


# --- rate limiting through the API ------------------------------------------------------------------


@pytest.fixture
def limited(sqlite_workspace: Workspace) -> Iterator[tuple[TestClient, dict[str, dict[str, str]], Clock]]:
    """An app whose ingestion limit is 10 events/s with bursts of 100, on a clock the test moves."""
    tokens = {}
    with sqlite_workspace.unit_of_work() as uow:
        for name in ("site", "crm"):
            tokens[name], _ = create_key(uow, name, "ingest")
        tokens["sync"], _ = create_key(uow, "sync", "admin")
    clock = Clock()
    with TestClient(create_app(workspace=sqlite_workspace)) as client:
        client.app.state.ingest_limiter = TokenBucket(10, 100, clock=clock)  # type: ignore[attr-defined]
        yield client, {name: {"Authorization": f"Bearer {t}"} for name, t in tokens.items()}, clock


def _events_of(workspace: Workspace) -> int:
    with workspace.unit_of_work(read_only=True) as uow:
        return len(uow.connection.execute(select(schema.events.c.id)).all())


def test_a_key_over_its_rate_is_answered_429_with_retry_after_and_nothing_is_applied(
    limited: tuple[TestClient, dict[str, dict[str, str]], Clock], sqlite_workspace: Workspace
) -> None:
    client, keys, clock = limited
    first = client.post("/v1/events", json=[event(i) for i in range(60)], headers=keys["site"])
    assert first.status_code == 200 and first.json()["accepted"] == 60
    over = client.post("/v1/events", json=[event(i) for i in range(60, 120)], headers=keys["site"])
    assert over.status_code == 429
    assert over.headers["content-type"] == "application/problem+json"
    assert over.headers["retry-after"] == "2"  # 40 tokens left, 60 asked, 10 a second
    body = over.json()
    assert body["type"].endswith("/rate-limited") and body["status"] == 429 and body["retry_after"] == 2
    key_id = keys["site"]["Authorization"].split("_")[1]
    assert f"key {key_id} (site)" in body["detail"] and "10 records per second" in body["detail"]
    assert "100" in body["detail"] and keys["site"]["Authorization"][7:] not in over.text
    assert _events_of(sqlite_workspace) == 60  # the refused batch left nothing behind
    # The 40 tokens left admit smaller requests until they are spent; then even one event waits.
    assert client.post("/v1/events", json=[event(i) for i in range(200, 240)], headers=keys["site"]).status_code == 200
    assert client.post("/v1/events", json=event(300), headers=keys["site"]).status_code == 429
    other = client.post("/v1/events", json=event(400, "ann@acme.com"), headers=keys["crm"])
    assert other.status_code == 200  # the other key is not slowed by this one
    clock.now += 6
    again = client.post("/v1/events", json=[event(i) for i in range(60, 120)], headers=keys["site"])
    assert again.status_code == 200 and again.json()["accepted"] == 60
    assert _events_of(sqlite_workspace) == 60 + 40 + 1 + 60


def test_a_batch_larger_than_the_burst_is_told_to_split(limited: tuple[TestClient, dict[str, Any], Clock]) -> None:
    client, keys, _ = limited
    answer = client.post("/v1/events", json=[event(i) for i in range(101)], headers=keys["site"])
    assert answer.status_code == 429 and "split the batch" in answer.json()["detail"]
    assert int(answer.headers["retry-after"]) >= 1
    assert client.post("/v1/events", json=[event(i) for i in range(100)], headers=keys["site"]).status_code == 200


def test_leads_and_accounts_draw_from_the_same_bucket_as_events(
    limited: tuple[TestClient, dict[str, dict[str, str]], Clock],
) -> None:
    client, keys, clock = limited
    leads = [{"email": f"l{i}@acme.com"} for i in range(50)]
    assert client.put("/v1/leads", json=leads, headers=keys["sync"]).status_code == 200
    accounts = [{"domain": f"d{i}.com"} for i in range(30)]
    assert client.put("/v1/accounts", json=accounts, headers=keys["sync"]).status_code == 200
    refused = client.post("/v1/events", json=[event(i) for i in range(21)], headers=keys["sync"])
    assert refused.status_code == 429 and "21 events asked, 20 available" in refused.json()["detail"]
    over = client.put("/v1/leads", json=[{"email": f"m{i}@acme.com"} for i in range(21)], headers=keys["sync"])
    assert over.status_code == 429 and "21 leads asked" in over.json()["detail"]
    assert client.put("/v1/accounts", json=accounts[:21], headers=keys["sync"]).status_code == 429
    clock.now += 1
    assert client.put("/v1/leads", json=leads[:30], headers=keys["sync"]).status_code == 200


def test_the_limit_comes_from_the_settings_and_zero_turns_it_off(sqlite_workspace: Workspace) -> None:
    with sqlite_workspace.unit_of_work() as uow:
        token, _ = create_key(uow, "loader", "ingest")
    headers = {"Authorization": f"Bearer {token}"}
    # A rate no test run could refill one token at: 1 token per 1,000 s.
    sqlite_workspace.settings = sqlite_workspace.settings.model_copy(update={"ingest_rate": 0.001, "ingest_burst": 50})
    with TestClient(create_app(workspace=sqlite_workspace)) as client:
        assert client.post("/v1/events", json=[event(i) for i in range(50)], headers=headers).status_code == 200
        assert client.post("/v1/events", json=event(51), headers=headers).status_code == 429
    sqlite_workspace.settings = sqlite_workspace.settings.model_copy(update={"ingest_rate": 0, "ingest_burst": 1})
    with TestClient(create_app(workspace=sqlite_workspace)) as client:
        for round_ in range(3):
            batch = [event(1000 * round_ + i) for i in range(200)]
            assert client.post("/v1/events", json=batch, headers=headers).status_code == 200


def test_the_defaults_leave_normal_use_alone(sqlite_workspace: Workspace) -> None:
    settings = sqlite_workspace.settings
    assert settings.ingest_rate >= 1000 and settings.ingest_burst >= 10_000  # MAX_BATCH always fits


def page_view(n: int) -> dict[str, str]:
    return {"visitor": "v" + "0" * 31, "event_id": f"{n:032x}", "url": f"https://www.acme.com/p/{n}"}


def test_the_public_tracking_routes_are_limited_per_address(sqlite_workspace: Workspace) -> None:
    clock = Clock()
    with TestClient(create_app(workspace=sqlite_workspace)) as client:
        client.app.state.tracking_limiter = TokenBucket(2, 5, clock=clock)  # type: ignore[attr-defined]
        for n in range(5):
            assert client.post("/t/events", content=json.dumps(page_view(n))).status_code == 200
        over = client.post("/t/events", content=json.dumps(page_view(5)))
        assert over.status_code == 429 and over.headers["retry-after"] == "1"
        assert over.headers["access-control-allow-origin"] == "*"  # the site's script may read why
        assert over.json()["type"].endswith("/rate-limited") and "from this address" in over.json()["detail"]
        identify = {"visitor": "v" + "0" * 31, "event_id": "f" * 32, "email": "ann@acme.com"}
        assert client.post("/t/identify", content=json.dumps(identify)).status_code == 429  # one bucket for both
        clock.now += 1  # two more calls a second
        assert client.post("/t/identify", content=json.dumps(identify)).status_code == 200
    with sqlite_workspace.unit_of_work(read_only=True) as uow:
        stored = uow.connection.execute(select(schema.events.c.event_id)).scalars().all()
    # The five views, stitched onto the lead with the identify's form submit; the refused view nowhere.
    assert sorted(stored) == sorted([f"web:{n:032x}" for n in range(5)] + ["web:" + "f" * 32])
    sqlite_workspace.settings = sqlite_workspace.settings.model_copy(update={"tracking_rate": 0})
    with TestClient(create_app(workspace=sqlite_workspace)) as client:
        assert all(
            client.post("/t/events", content=json.dumps(page_view(100 + n))).status_code == 200 for n in range(400)
        )


def test_429_is_documented_on_the_ingestion_routes(sqlite_workspace: Workspace) -> None:
    with TestClient(create_app(workspace=sqlite_workspace)) as client:
        paths = client.get("/openapi.json").json()["paths"]
    for operation in (paths["/v1/events"]["post"], paths["/v1/leads"]["put"], paths["/v1/accounts"]["put"]):
        assert "Retry-After" in operation["responses"]["429"]["headers"]
        assert "application/problem+json" in operation["responses"]["429"]["content"]


# --- authentication on every route ------------------------------------------------------------------


@pytest.fixture
def api(workspace: Workspace) -> Iterator[tuple[TestClient, dict[str, dict[str, str]]]]:
    world(workspace, leads=4)
    headers = {}
    with workspace.unit_of_work() as uow:
        for role in Role:
            headers[role.value] = {"Authorization": f"Bearer {key_for(uow, role.value)}"}
        add_user(uow, "mia", "marketing", PASSWORD)
    with TestClient(create_app(workspace=workspace)) as client:
        yield client, headers


def _concrete(path: str) -> str:
    names = {
        "key": "vp0@bigco.com",
        "action": "accept",
        "key_id": "0000",
        "name": "nothing",
        "lead_id": "1",
        "change": "enable",
    }
    return re.sub(r"\{(\w+)\}", lambda m: names.get(m.group(1), "1"), path)


def test_every_route_but_the_public_ones_refuses_a_missing_a_bad_and_a_revoked_key(
    api: Any, workspace: Workspace
) -> None:
    client, keys = api
    spec = client.get("/openapi.json").json()
    with workspace.unit_of_work() as uow:
        revoked, info = create_key(uow, "gone", "admin")
    client.delete(f"/v1/keys/{info.key_id}", headers=keys["admin"])
    admin_token = keys["admin"]["Authorization"][7:]
    bad = {
        "none": {},
        "empty bearer": {"Authorization": "Bearer "},
        "not a key": {"Authorization": "Bearer ' OR 1=1 --"},
        "wrong secret": {"Authorization": f"Bearer {admin_token[:-4]}abcd"},
        "wrong secret as X-API-Key": {"X-API-Key": admin_token[:-4] + "abcd"},
        "revoked": {"Authorization": f"Bearer {revoked}"},
        "basic auth": {"Authorization": "Basic YWRtaW46YWRtaW4="},
    }
    checked, public = 0, []
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if path == "/healthz" or operation.get("x-public") is True:
                public.append(f"{method.upper()} {path}")
                continue
            assert "x-permission" in operation, f"{method.upper()} {path} is neither public nor guarded"
            for what, headers in bad.items():
                answer = client.request(method.upper(), _concrete(path), headers=headers, json={})
                assert answer.status_code == 401, f"{what}: {method.upper()} {path} answered {answer.status_code}"
                assert answer.json()["type"].endswith("/unauthenticated")
                checked += 1
    assert checked >= 30 * len(bad)
    # The documented public routes, and nothing else: tracking pixel, click, unsubscribe, web
    # tracking, and the probes (liveness, readiness: they say whether the database answers, no more).
    assert all(p.split()[1].startswith(("/e/", "/t/", "/healthz", "/readyz")) for p in public), public


def test_the_public_routes_answer_without_a_key(api: Any) -> None:
    client, _ = api
    spec = client.get("/openapi.json").json()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if operation.get("x-public") is True:
                answer = client.request(method.upper(), _concrete(path), content=b"{}")
                assert answer.status_code != 401, f"{method.upper()} {path} wants a key"


def test_routes_left_out_of_the_openapi_document_are_only_cors_preflights() -> None:
    for module in (admin, automation, email_tracking, events, leads, models, operations, tracking, webhooks):
        for route in module.router.routes:
            assert isinstance(route, APIRoute)
            if not route.include_in_schema:
                assert route.methods == {"OPTIONS"} and module is tracking, route.path


# The dashboard's routes, each with who may open it: a new route fails here until it is classified.
DASHBOARD = {
    ("GET", "/app"): "public",
    ("GET", "/app/login"): "public",
    ("POST", "/app/login"): "public",
    ("POST", "/app/logout"): "signed_in",
    ("GET", "/app/funnel"): "signed_in",
    ("GET", "/app/queue"): "signed_in",
    ("POST", "/app/queue/{lead_id}/{action}"): "signed_in",
    ("GET", "/app/leads"): "signed_in",
    ("GET", "/app/leads.csv"): "signed_in",
    ("POST", "/app/leads/bulk"): "manager",
    ("POST", "/app/leads/views"): "signed_in",
    ("POST", "/app/leads/views/{view_id}/delete"): "signed_in",
    ("GET", "/app/leads/{lead_id}"): "signed_in",
    ("POST", "/app/leads/{lead_id}/actions/{action}"): "signed_in",
    ("POST", "/app/leads/{lead_id}/owner"): "manager",
    ("POST", "/app/leads/{lead_id}/nurture"): "manager",
    ("POST", "/app/leads/{lead_id}/tags"): "signed_in",
    ("POST", "/app/leads/{lead_id}/notes"): "signed_in",
    ("GET", "/app/accounts"): "signed_in",
    ("GET", "/app/accounts/{account_id}"): "signed_in",
    ("POST", "/app/accounts/{account_id}/actions/{action}"): "signed_in",
    ("GET", "/app/predictive"): "manager",
    ("GET", "/app/predictive/{version}"): "manager",
    ("POST", "/app/predictive/{version}/activate"): "admin",
    ("GET", "/app/users"): "admin",
    ("POST", "/app/users"): "admin",
    ("POST", "/app/users/{user_id}/role"): "admin",
    ("POST", "/app/users/{user_id}/{change}"): "admin",
    ("GET", "/app/me"): "signed_in",
    ("POST", "/app/me/password"): "signed_in",
    ("GET", "/app/automation"): "manager",
    ("GET", "/app/automation/editor"): "manager",
    ("POST", "/app/automation/validate"): "manager",
    ("POST", "/app/automation/preview"): "manager",
    ("POST", "/app/automation/apply"): "manager",
    ("GET", "/app/automation/segments/{name}"): "manager",
    ("GET", "/app/insights"): "manager",
    ("GET", "/app/model"): "manager",
    ("POST", "/app/model/validate"): "manager",
    ("POST", "/app/model/backtest"): "manager",
    ("POST", "/app/model/activate"): "admin",
}


INPLACE = {"X-Requested-With": "fetch"}  # the queue's actions answer with the row, not a redirect


def _sign_in(client: TestClient, name: str) -> str:
    form = client.get("/app/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form)
    assert csrf
    signed = client.post(
        "/app/login", data={"name": name, "password": PASSWORD, "csrf": csrf.group(1)}, follow_redirects=False
    )
    assert signed.status_code == 303, signed.text
    page = client.get("/app/funnel").text
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token
    return token.group(1)


def test_every_dashboard_route_with_no_session_and_with_every_role(api: Any, workspace: Workspace) -> None:
    client, _ = api
    with workspace.unit_of_work(read_only=True) as uow:
        owned = uow.connection.execute(
            select(schema.leads.c.id).where(schema.leads.c.owner == "sam.rivera").order_by(schema.leads.c.id)
        ).scalar()
    assert owned is not None  # the sales rep has a lead of their own to act on
    routes = {(method, route.path) for route in dashboard_router.routes for method in route.methods}  # type: ignore[attr-defined]
    assert routes == set(DASHBOARD), routes ^ set(DASHBOARD)
    guarded = [(m, p, who) for (m, p), who in DASHBOARD.items() if who != "public"]
    for method, path, _ in guarded:
        client.cookies.clear()
        answer = client.request(method, _concrete(path), follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/app/login"), (method, path)
    for user, role in (("ana", "admin"), ("mia", "marketing"), ("sam.rivera", "sales")):
        client.cookies.clear()
        csrf = _sign_in(client, user)
        for method, path, who in guarded:
            if path == "/app/logout":
                continue
            url = _concrete(path).replace("/queue/1/", f"/queue/{owned}/").replace("/leads/1/", f"/leads/{owned}/")
            if method == "POST":
                forged = client.post(url, data={"csrf": "forged"}, follow_redirects=False)
                assert forged.status_code == 403, f"{role}: POST {path} without the form's token: {forged.status_code}"
                answer = client.post(
                    url, data={"csrf": csrf, "document": "name: x"}, headers=INPLACE, follow_redirects=False
                )
            else:
                answer = client.get(url, follow_redirects=False)
            if (who == "manager" and role == "sales") or (who == "admin" and role != "admin"):
                assert answer.status_code == 403, f"{role} opened {method} {path}"
            else:
                to_sign_in = answer.status_code == 303 and answer.headers["location"].startswith("/app/login")
                assert answer.status_code not in (401, 403) and not to_sign_in, f"{role} refused on {method} {path}"
        out = client.post("/app/logout", data={"csrf": csrf}, follow_redirects=False)
        assert out.status_code == 303
        assert client.get("/app/funnel", follow_redirects=False).status_code == 303


# --- weak secrets refused at start --------------------------------------------------------------------


WEAK = [
    "",
    "   ",
    "changeme",
    "secret",
    "placeholder",
    "example",
    "test",
    "x" * 64,
    "change-me-change-me-change-me-change-me",
    "your-session-secret-goes-here-0123456789",
    "an-example-value-with-random-bits-Zq8Kp3",
    "R4nd0m-but-short-Xq",
    "ab" * 32,
]


def test_weak_session_secrets_are_recognised_and_random_ones_are_not() -> None:
    for value in WEAK:
        assert weak_secret(value), repr(value)
    for _ in range(200):
        assert weak_secret(secrets.token_urlsafe(32)) is None
        assert weak_secret(secrets.token_hex(16)) is None
    assert weak_secret("correct horse battery staple, then some more words") is None
    # Values that made a regular expression backtrack for minutes are judged at once.
    started = time.monotonic()
    for value in ("1" * 5000 + "y", "x" * 5000 + "y!", "me" * 2000 + "Q"):
        assert weak_secret(value), value[:20]
    assert time.monotonic() - started < 2
    for value in ("…", "...", "<password>", "changeme", "xxxxxxxx", "your-password"):
        assert placeholder_password(value), value
    assert placeholder_password("hunter2-hunter2") is None


def _cli(args: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, timeout=60, env={**os.environ, **env}
    )  # fmt: skip


@pytest.mark.slow
def test_serve_refuses_to_start_with_a_placeholder_session_secret(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'w.db'}"
    run("init", "--db", db)
    for value in ("changeme", "", "test", "y" * 40, "short-random-Kq8"):
        done = _cli(["serve", "--db", db, "--port", str(free_port())], QUALIFY_SESSION_SECRET=value)
        assert done.returncode == 2, (value, done.stdout, done.stderr)
        message = " ".join(done.stderr.split())
        assert "QUALIFY_SESSION_SECRET is not safe" in message and "32 characters or more" in message
        assert "Traceback" not in done.stderr and "Uvicorn running" not in done.stderr
        if value in ("y" * 40, "short-random-Kq8"):
            assert value not in done.stdout + done.stderr  # the message says why, never what
    worker = _cli(["worker", "--once", "--db", db], QUALIFY_SMTP_PASSWORD="changeme", QUALIFY_SMTP_HOST="127.0.0.1")
    assert worker.returncode == 2 and "QUALIFY_SMTP_PASSWORD is not a real password" in worker.stderr


# --- no secret in any log ------------------------------------------------------------------------------


@pytest.mark.slow
def test_no_secret_reaches_the_logs_of_a_real_server_and_worker(tmp_path: Path) -> None:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    from qualify.bootstrap import open_workspace
    from qualify.service.email.outbox import enqueue
    from qualify.service.email.templates import EmailTemplate, save_templates
    from qualify.settings import Settings
    from tests.e2e.test_webhooks_http import Receiver
    from tests.integration.test_email import Inbox

    db = f"sqlite:///{tmp_path / 'w.db'}"
    run("init", "--db", db)
    admin_key = json.loads(run("keys", "create", "ops", "--role", "admin", "--json", "--db", db))["key"]
    ingest_key = json.loads(run("keys", "create", "site", "--role", "ingest", "--json", "--db", db))["key"]
    user_password = "Dashboard-Pass-" + secrets.token_hex(8)
    subprocess.run(
        [SCRIPT, "users", "add", "ana", "--role", "admin", "--password-stdin", "--db", db],
        input=user_password + "\n", text=True, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    receiver = Receiver()
    webhook_secret = "whsec-" + secrets.token_hex(16)
    run("webhooks", "add", receiver.url, "--kind", "stage.changed", "--secret", webhook_secret, "--db", db)
    smtp_password = "smtp-" + secrets.token_hex(12)
    logins: list[bytes] = []

    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        good = isinstance(data, LoginPassword) and data.password == smtp_password.encode()
        logins.append(data.login if isinstance(data, LoginPassword) else b"?")
        return AuthResult(success=good)

    inbox = Inbox()
    smtp = Controller(
        inbox, hostname="127.0.0.1", port=free_port(), authenticator=authenticate, auth_require_tls=False
    )  # fmt: skip
    session_secret = secrets.token_urlsafe(48)
    wrong_password = "Wrong-Pass-" + secrets.token_hex(8)
    bad_keys = [admin_key[:-6] + "zzzzzz", "qk_nokey_" + secrets.token_hex(16), "sk_live_" + secrets.token_hex(12)]
    env = {
        **os.environ,
        "QUALIFY_SESSION_SECRET": session_secret,
        "QUALIFY_SMTP_HOST": "127.0.0.1",
        "QUALIFY_SMTP_PORT": str(smtp.port),
        "QUALIFY_SMTP_SECURITY": "none",
        "QUALIFY_SMTP_USERNAME": "qualify",
        "QUALIFY_SMTP_PASSWORD": smtp_password,
        "QUALIFY_EMAIL_FROM": "Acme <news@acme.example>",
    }
    port = free_port()
    logs = tmp_path / "serve.log"
    with logs.open("wb") as sink:
        server = subprocess.Popen(
            [SCRIPT, "serve", "--port", str(port), "--db", db, "--log-level", "debug"],
            stdout=sink, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    smtp.start()
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "qualify serve did not answer within 30 s"
                time.sleep(0.1)
        with httpx.Client(base_url=base, timeout=30) as client:
            mql = event(1, "vp@bigco.com", "demo_request")
            assert client.post("/v1/events", json=mql, headers={"Authorization": f"Bearer {ingest_key}"}).is_success
            assert client.get("/v1/leads", headers={"X-API-Key": admin_key}).status_code == 200
            for bad in bad_keys:
                assert client.get("/v1/leads", headers={"Authorization": f"Bearer {bad}"}).status_code == 401
                assert client.post("/v1/events", json=mql, headers={"X-API-Key": bad}).status_code == 401
            form = client.get("/app/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert csrf
            for password, status in ((wrong_password, 401), (user_password, 303)):
                answer = client.post(
                    "/app/login", data={"name": "ana", "password": password, "csrf": csrf.group(1)}, follow_redirects=False
                )  # fmt: skip
                assert answer.status_code == status
            assert client.get("/app/queue").status_code == 200  # signed with the configured secret
        workspace = open_workspace(Settings(database_url=db))
        with workspace.unit_of_work() as uow:
            save_templates(uow.connection, [EmailTemplate("hello", "Hi {{ first_name }}", "Hello\n", None)], T0)
            lead_id = uow.connection.execute(select(schema.leads.c.id)).scalar_one()
            enqueue(uow.connection, workspace.settings, lead_id=lead_id, template="hello", now=datetime.now(UTC))
        workspace.close()
        worker = subprocess.run(
            [SCRIPT, "worker", "--once", "--log-level", "debug", "--db", db],
            capture_output=True, text=True, timeout=120, env=env,
        )  # fmt: skip
        assert worker.returncode == 0, worker.stderr
    finally:
        server.terminate()
        server.wait(timeout=15)
        smtp.stop()
        receiver.close()
    # The secrets were used: the worker logged in and sent, the webhook went out signed.
    assert logins == [b"qualify"] and len(inbox.received) == 1
    assert receiver.received and all("qualify-signature" in r.headers for r in receiver.received)
    served = logs.read_text(encoding="utf-8", errors="replace")
    assert "GET /v1/leads" in served and "POST /app/login" in served  # the access log was on
    output = served + worker.stdout + worker.stderr
    secret_parts = [k.split("_", 2)[2] for k in (admin_key, ingest_key)] + [b.split("_", 2)[2] for b in bad_keys]
    for name, value in {
        "admin key": admin_key,
        "ingest key": ingest_key,
        **{f"secret part of key {i}": part for i, part in enumerate(secret_parts)},
        "session secret": session_secret,
        "SMTP password": smtp_password,
        "webhook secret": webhook_secret,
        "dashboard password": user_password,
        "wrong dashboard password": wrong_password,
    }.items():
        assert value not in output, f"the {name} is in the logs"
    # Nor in the store, where only hashes are kept (the webhook secret signs, so it is kept as is).
    engine = create_engine(db)
    with engine.connect() as connection:
        stored = " ".join(
            str(row)
            for table in schema.metadata.sorted_tables
            if table.name != "webhook_subscriptions"
            for row in connection.execute(select(table))
        )
    engine.dispose()
    for value in (admin_key, ingest_key, *secret_parts, session_secret, smtp_password, user_password, wrong_password):
        assert value not in stored
    assert webhook_secret not in stored


def test_the_session_secret_in_the_settings_is_never_shown() -> None:
    from pydantic import SecretStr

    from qualify.settings import Settings

    secret = secrets.token_urlsafe(48)
    settings = Settings(session_secret=SecretStr(secret), smtp_password=SecretStr("p4ss-" + secret[:10]))
    assert settings.session_secret is not None and settings.session_secret.get_secret_value() == secret
    assert secret not in repr(settings) and secret not in str(settings.model_dump())
