"""Many writers on the same leads at once, on PostgreSQL: events, upserts, sales' stage actions from
several API processes and the CLI, while `qualify worker` runs its timers. No answer may be a
server error or a conflict the client has to resolve, no update may be lost, and every lead's stage
history must be a chain: each move starts where the one before it ended, no earlier, and is a
legal move."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from qualify.adapters import schema
from qualify.bootstrap import open_workspace
from qualify.domain.lifecycle import AUTOMATIC_MOVES, STAGE_ACTIONS, Stage
from qualify.settings import Settings
from tests.e2e.test_serve import SCRIPT, Server, run

LEADS = [f"buyer{i}@initech.com" for i in range(8)]
SENDERS, OPERATIONS = 8, 40
ACTIONS = {
    "accept": None,
    "reject": "no_need",
    "open-opportunity": None,
    "win": None,
    "lose": "price",
    "advocate": None,
}
# One in nine upserts makes the lead a student, whom the model disqualifies: out of the funnel for good.
TITLES = [
    "VP Marketing",
    "Head of Growth",
    "CEO",
    "Marketing Manager",
    "Analyst",
    "CTO",
    "Director",
    "Buyer",
    "Student",
]
KINDS = ["page_view", "content_download", "email_click", "demo_request", "quote_request"]
LEGAL = AUTOMATIC_MOVES | {(source, a.target) for a in STAGE_ACTIONS.values() for source in a.sources}


def operation(rng: random.Random, sender: int, n: int, now: datetime) -> tuple[str, str, Any]:
    """One request: (method, path, body), chosen at random but the same for a given seed."""
    roll = rng.random()
    if roll < 0.45:
        events = [
            {
                "event_id": f"s{sender}-{n}-{k}",
                "type": rng.choices(KINDS, weights=[5, 3, 3, 1, 1])[0],
                "occurred_at": (now - timedelta(seconds=rng.randrange(0, 600))).isoformat(),
                "email": rng.choice(LEADS),
                "properties": {"url": "/pricing", "title": "Guide", "campaign": "spring"},
            }
            for k in range(rng.randrange(1, 6))
        ]
        return "POST", "/v1/events", {"events": events}
    if roll < 0.85:
        action = rng.choice(list(ACTIONS))
        body = {"reason": ACTIONS[action]} if ACTIONS[action] else {}
        return "POST", f"/v1/leads/{rng.choice(LEADS)}/actions/{action}", body
    lead = {"email": rng.choice(LEADS), "title": rng.choice(TITLES), "seniority": "vp"}
    return "PUT", "/v1/leads", [lead]


@pytest.mark.slow
def test_concurrent_writers_keep_every_update_and_an_unbroken_stage_history(postgres_schema_url: str) -> None:
    db = postgres_schema_url
    run("init", "--db", db)
    admin = json.loads(run("keys", "create", "crowd", "--role", "admin", "--json", "--db", db))["key"]
    now = datetime.now(UTC)
    # Start the leads as MQLs with a profile, so that every action has something to act on.
    seed = [
        {
            "event_id": f"seed-{i}",
            "type": "demo_request",
            "occurred_at": (now - timedelta(hours=1)).isoformat(),
            "email": e,
        }
        for i, e in enumerate(LEADS)
    ]
    servers = [Server(db, workers=2), Server(db, workers=2)]  # four API processes in all
    worker = subprocess.Popen(
        [SCRIPT, "worker", "--interval", "0.2", "--db", db],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    answers: Counter[tuple[str, int, str]] = Counter()
    accepted_events: set[str] = set()
    actions_done: list[str] = []
    lock = threading.Lock()
    try:
        for server in servers:
            server.start()
        headers = {"Authorization": f"Bearer {admin}"}
        assert httpx.post(f"{servers[0].url}/v1/events", json=seed, headers=headers, timeout=60).status_code == 200

        def send(sender: int) -> None:
            rng = random.Random(sender)
            url = servers[sender % len(servers)].url
            with httpx.Client(base_url=url, headers=headers, timeout=60) as client:
                for n in range(OPERATIONS):
                    method, path, body = operation(rng, sender, n, now)
                    answer = client.request(method, path, json=body)
                    kind = path.rsplit("/", 1)[-1] if "/actions/" in path else path
                    problem = answer.json().get("type", "").rsplit("/", 1)[-1] if answer.status_code >= 400 else ""
                    with lock:
                        answers[(kind, answer.status_code, problem)] += 1
                        if answer.status_code == 200 and path == "/v1/events":
                            accepted_events.update(
                                r["event_id"] for r in answer.json()["results"] if r["status"] == "accepted"
                            )
                        if answer.status_code == 200 and "/actions/" in path:
                            actions_done.append(kind)

        def sales_desk() -> None:
            """A person at the command line, acting on the same leads at the same time."""
            rng = random.Random(99)
            for _ in range(6):
                action = rng.choice(list(ACTIONS))
                reason = ["--reason", ACTIONS[action] or ""] if ACTIONS[action] else []
                lead = rng.choice(LEADS)
                done = subprocess.run(
                    [SCRIPT, "stage", action, lead, "--by", "Ana", *reason, "--db", db],
                    capture_output=True,
                    text=True,
                    timeout=120,
                    env=os.environ.copy(),
                )
                outcome = "ok" if done.returncode == 0 else ("illegal" if "cannot" in done.stderr else done.stderr)
                with lock:
                    answers[("cli " + action, done.returncode, outcome)] += 1
                    if done.returncode == 0:
                        actions_done.append(action)

        with ThreadPoolExecutor(SENDERS + 1) as pool:
            futures = [pool.submit(send, s) for s in range(SENDERS)] + [pool.submit(sales_desk)]
            for future in futures:
                future.result()
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        for server in servers:
            server.stop()

    # Every answer is a success or the lifecycle saying no (the lead had moved on): never a server
    # error, never a deadlock or conflict handed back to the client.
    unexpected = {k: v for k, v in answers.items() if (k[1], k[2]) not in {(200, ""), (409, "illegal-transition")}}
    unexpected = {k: v for k, v in unexpected.items() if not (k[0].startswith("cli ") and k[2] in {"ok", "illegal"})}
    assert not unexpected, unexpected
    assert len(actions_done) > 10, answers

    workspace = open_workspace(Settings(database_url=db))
    try:
        with workspace.unit_of_work(read_only=True) as uow:
            conn = uow.connection
            stored_events = set(conn.execute(select(schema.events.c.event_id)).scalars())
            stages = {r.id: (r.email, r.stage) for r in conn.execute(select(schema.leads))}
            history = conn.execute(select(schema.stage_history).order_by(schema.stage_history.c.id)).all()
            audited = conn.execute(
                select(func.count()).select_from(schema.audit_log).where(schema.audit_log.c.action.like("stage.%"))
            ).scalar_one()
    finally:
        workspace.close()

    kinds_of_move = Counter((h.from_stage, h.to_stage, h.actor) for h in history)
    print(f"answers {dict(answers)}; events {len(accepted_events)}; moves {dict(kinds_of_move)}")  # shown with -s
    # No lost update: every acknowledged event is stored, every successful action recorded and audited.
    assert accepted_events <= stored_events
    user_moves = [h for h in history if h.actor == "user"]
    assert len(user_moves) == len(actions_done) == audited
    assert Counter(h.by for h in user_moves)["Ana"] == sum(
        v for k, v in answers.items() if k[0].startswith("cli ") and k[1] == 0
    )

    # The history of every lead is a chain of legal moves that ends at the stage the lead is in.
    by_lead: dict[int, list[Any]] = {}
    for move in history:
        by_lead.setdefault(move.lead_id, []).append(move)
    assert set(by_lead) == set(stages)
    for lead_id, moves in by_lead.items():
        email, stage = stages[lead_id]
        assert moves[0].from_stage is None, email
        for before, after in itertools.pairwise(moves):
            assert after.at >= before.at, f"{email}: a move dated before the one it follows"
            assert after.from_stage == before.to_stage, f"{email}: {before.to_stage} then {after.from_stage}→"
            assert (Stage(after.from_stage), Stage(after.to_stage)) in LEGAL, (email, after.from_stage, after.to_stage)
        assert moves[-1].to_stage == stage, email
