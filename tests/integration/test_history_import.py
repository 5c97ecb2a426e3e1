"""Bring your history: stage changes, deals and a leads file's lifecycle dates imported in bulk;
history that arrives out of time order ends as one time-ordered replay of it leaves it."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from tests.conftest import copy_of_fresh_workspace, write_csv

from qualify.adapters import repository as repo
from qualify.adapters import schema
from qualify.domain.evaluator import LeadState, OnlineEvaluator
from qualify.domain.fit import disqualifying_rule, profile_values, score_fit
from qualify.domain.lifecycle import Stage
from qualify.domain.records import Lead
from qualify.domain.replay import ReplayAction, ReplayEvent, replay_lead
from qualify.service.imports.files import import_file
from qualify.service.imports.mapping import parse_mapping
from qualify.service.lifecycle.lead_admin import erase_lead, merge_leads
from qualify.service.lifecycle.stage_facts import contradiction, imported_fact
from qualify.service.lifecycle.stages import apply_stage_action
from qualify.service.pipeline import reacting
from qualify.service.unit_of_work import Workspace

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
T0 = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
DAY = timedelta(days=1)


def iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def history_of(workspace: Workspace, email: str) -> list[tuple[str | None, str, datetime, str, str]]:
    h, leads = schema.stage_history, schema.leads
    with workspace.unit_of_work() as uow:
        rows = uow.connection.execute(
            select(h.c.from_stage, h.c.to_stage, h.c.at, h.c.actor, h.c.by)
            .join(leads, leads.c.id == h.c.lead_id)
            .where(leads.c.email == email)
            .order_by(h.c.at, h.c.id)
        )
        return [tuple(r) for r in rows]


def lead_row(workspace: Workspace, email: str) -> Any:
    with workspace.unit_of_work() as uow:
        return uow.connection.execute(select(schema.leads).where(schema.leads.c.email == email)).one()


# --- the files a CRM gives ------------------------------------------------------------------------


def test_stage_changes_and_deals_import_as_history_in_any_order(workspace: Workspace, tmp_path: Path) -> None:
    events = write_csv(
        tmp_path / "events.csv",
        ["event_id", "email", "type", "occurred_at"],
        [
            ["a1", "ann@acme.com", "demo_request", iso(T0)],
            ["a2", "ann@acme.com", "email_click", iso(T0 + 2 * DAY)],
            ["b1", "bob@beta.io", "email_open", iso(T0 + 20 * DAY)],
        ],
    )
    stages = write_csv(
        tmp_path / "stages.csv",
        ["email", "action", "at", "by", "reason"],
        [
            ["ann@acme.com", "accept", iso(T0 + 3 * DAY), "sam", ""],
            ["bob@beta.io", "accept", iso(T0 + 10 * DAY), "sam", ""],
            ["bob@beta.io", "reject", iso(T0 + 30 * DAY), "sam", "They said no budget"],
        ],
    )
    deals = write_csv(
        tmp_path / "deals.csv",
        ["deal_id", "email", "opened_at", "closed_at", "outcome", "amount"],
        [["D-1", "ann@acme.com", iso(T0 + 5 * DAY), iso(T0 + 40 * DAY), "won", "12000"]],
    )
    history = reacting(workspace, history_before=NOW)
    first = import_file(workspace, "stages", stages, now=NOW)
    assert (first.created, first.rejected, first.rebuilt) == (3, 0, 2)
    assert import_file(workspace, "deals", deals, now=NOW).created == 1
    late = import_file(history, "events", events, now=NOW)  # older than the stages: rebuilt in order
    assert (late.accepted, late.rebuilt) == (3, 2)  # Bob's open is older than his reject

    ann = history_of(workspace, "ann@acme.com")
    assert [(f, t, at, actor) for f, t, at, actor, _ in ann] == [
        (None, "lead", T0, "system"),
        ("lead", "mql", T0, "model"),  # the demo request's fast track, before sales accepted
        ("mql", "sql", T0 + 3 * DAY, "user"),
        ("sql", "opportunity", T0 + 5 * DAY, "user"),
        ("opportunity", "customer", T0 + 40 * DAY, "user"),
    ]
    assert ann[2][4] == "sam"
    bob = history_of(workspace, "bob@beta.io")
    # Bob was accepted before the model saw anything: an imported step forward applies from any stage.
    assert [(f, t) for f, t, *_ in bob] == [(None, "lead"), ("lead", "sql"), ("sql", "nurture")]
    with workspace.unit_of_work() as uow:
        reason, note = uow.connection.execute(
            select(schema.stage_history.c.reason, schema.stage_history.c.note).where(
                schema.stage_history.c.to_stage == "nurture"
            )
        ).one()
    assert (reason, note) == ("other", "They said no budget")  # kept, under the code `other`
    # History sends nothing: no SLA clock, no owner, nothing to deliver.
    row = lead_row(workspace, "ann@acme.com")
    assert (row.stage, row.sla_due_at, row.owner) == ("customer", None, None)
    with workspace.unit_of_work() as uow:
        assert uow.connection.execute(select(schema.assignments)).first() is None
    # Importing it all again changes nothing.
    again = import_file(workspace, "stages", stages, now=NOW)
    assert (again.created, again.unchanged, again.rebuilt) == (0, 3, 0)
    assert import_file(workspace, "deals", deals, now=NOW).unchanged == 1
    assert history_of(workspace, "ann@acme.com") == ann


def test_contradicting_rows_go_to_the_rejects_file_with_line_field_and_reason(
    sqlite_workspace: Workspace, tmp_path: Path
) -> None:
    stages = write_csv(
        tmp_path / "stages.csv",
        ["email", "stage", "action", "at", "reason"],
        [
            ["cy@corp.com", "customer", "", iso(T0 + 10 * DAY), ""],
            ["cy@corp.com", "sql", "", iso(T0 + 20 * DAY), ""],  # back up the funnel after a sale
            ["cy@corp.com", "", "fly", iso(T0), ""],
            ["cy@corp.com", "lead", "", iso(T0), ""],
            ["cy@corp.com", "sql", "win", iso(T0), ""],
            ["", "mql", "", iso(T0), ""],
            ["cy@corp.com", "mql", "", iso(NOW + 30 * DAY), ""],
        ],
    )
    summary = import_file(sqlite_workspace, "stages", stages, now=NOW)
    assert (summary.created, summary.rejected) == (1, 6)
    assert summary.rejects_path is not None
    with summary.rejects_path.open(encoding="utf-8") as handle:
        rejects = {int(r["line"]): (r["field"], r["reason"]) for r in csv.DictReader(handle)}
    assert rejects[3][0] == "at" and "customer at 2025-01-16" in rejects[3][1] and "then sql" in rejects[3][1]
    assert rejects[4][0] == "action" and "unknown action 'fly'" in rejects[4][1]
    assert rejects[5][0] == "stage" and "every lead starts in stage lead" in rejects[5][1]
    assert rejects[6][0] == "stage" and "win moves a lead to customer, not sql" in rejects[6][1]
    assert rejects[7][0] == "email"
    assert rejects[8][0] == "at" and "future" in rejects[8][1]
    assert lead_row(sqlite_workspace, "cy@corp.com").stage == "customer"  # the good row is kept


def test_a_deal_imported_again_replaces_its_outcome(sqlite_workspace: Workspace, tmp_path: Path) -> None:
    header = ["deal_id", "email", "opened_at", "closed_at", "outcome", "reason"]
    lost = write_csv(
        tmp_path / "lost.csv", header, [["D-9", "dee@firm.com", iso(T0), iso(T0 + 9 * DAY), "lost", "price"]]
    )
    won = write_csv(tmp_path / "won.csv", header, [["D-9", "dee@firm.com", iso(T0), iso(T0 + 12 * DAY), "won", ""]])
    import_file(sqlite_workspace, "deals", lost, now=NOW)
    assert [(t, r) for _, t, *r in history_of(sqlite_workspace, "dee@firm.com")][-1][0] == "nurture"
    assert import_file(sqlite_workspace, "deals", won, now=NOW).updated == 1
    assert [t for _, t, *_ in history_of(sqlite_workspace, "dee@firm.com")] == ["lead", "opportunity", "customer"]
    bad = write_csv(
        tmp_path / "bad.csv",
        header,
        [
            ["D-1", "x@firm.com", iso(T0 + DAY), iso(T0), "won", ""],
            ["D-2", "x@firm.com", "", "", "", ""],
            ["D-3", "x@firm.com", iso(T0), iso(T0 + DAY), "maybe", ""],
        ],
    )
    summary = import_file(sqlite_workspace, "deals", bad, now=NOW)
    assert summary.rejected == 3
    assert summary.rejects_path is not None
    with summary.rejects_path.open(encoding="utf-8") as handle:
        assert [r["field"] for r in csv.DictReader(handle)] == ["closed_at", "opened_at", "outcome"]


def test_a_deal_keyed_by_its_account_goes_to_the_lead_most_recently_active_by_then(
    workspace: Workspace, tmp_path: Path
) -> None:
    events = write_csv(
        tmp_path / "events.csv",
        ["event_id", "email", "type", "occurred_at"],
        [
            ["a", "ann@north.com", "page_view", iso(T0)],
            ["b", "ben@north.com", "page_view", iso(T0 + 2 * DAY)],
            ["c", "ann@north.com", "email_open", iso(T0 + 5 * DAY)],  # Ann again, before the first deal
            ["d", "ben@north.com", "email_click", iso(T0 + 20 * DAY)],  # Ben, before the second
        ],
    )
    accounts = write_csv(tmp_path / "accounts.csv", ["domain", "name"], [["north.com", "North"], ["empty.io", "E"]])
    deals = write_csv(
        tmp_path / "deals.csv",
        ["deal_id", "account_domain", "email", "opened_at", "closed_at", "outcome", "amount"],
        [
            ["O-1", "north.com", "", iso(T0 + 10 * DAY), iso(T0 + 15 * DAY), "lost", "9000"],
            ["O-2", "https://www.North.com/", "", iso(T0 + 30 * DAY), "", "open", "5000"],
            ["O-3", "north.com", "ben@north.com", iso(T0 + 11 * DAY), "", "open", ""],  # a contact wins
            ["O-4", "empty.io", "", iso(T0 + 10 * DAY), "", "open", ""],
            ["O-5", "not a domain", "", iso(T0 + 10 * DAY), "", "open", ""],
        ],
    )
    history = reacting(workspace, history_before=NOW)
    import_file(workspace, "accounts", accounts, now=NOW)
    import_file(history, "events", events, now=NOW)
    summary = import_file(workspace, "deals", deals, now=NOW)
    assert (summary.created, summary.rejected) == (3, 2)
    assert summary.rejects_path is not None
    with summary.rejects_path.open(encoding="utf-8") as handle:
        rejects = {int(r["line"]): (r["field"], r["reason"]) for r in csv.DictReader(handle)}
    assert rejects[5] == ("account_domain", "no lead at the account empty.io: import its people first")
    assert rejects[6][0] == "account_domain" and "not a web domain" in rejects[6][1]
    with workspace.unit_of_work() as uow:
        owners = dict(
            uow.connection.execute(
                select(schema.deals.c.deal_id, schema.leads.c.email).join(
                    schema.leads, schema.leads.c.id == schema.deals.c.lead_id
                )
            ).all()
        )
    assert owners == {"O-1": "ann@north.com", "O-2": "ben@north.com", "O-3": "ben@north.com"}
    assert [t for _, t, *_ in history_of(workspace, "ann@north.com")][-2:] == ["opportunity", "nurture"]


def test_a_leads_file_brings_its_lifecycle_dates(sqlite_workspace: Workspace, tmp_path: Path) -> None:
    mapping = parse_mapping(
        """
kind: leads
fields:
  email: Email
lifecycle:
  mql: {column: Became an MQL, format: "%d/%m/%Y"}
  sql: Became an SQL
  customer: Became a customer
""",
        "hubspot.yaml",
    )
    leads = write_csv(
        tmp_path / "contacts.csv",
        ["Email", "Became an MQL", "Became an SQL", "Became a customer"],
        [
            ["eve@shop.com", "06/01/2025", "2025-01-09T00:00:00Z", "2025-02-01T00:00:00Z"],
            ["fay@shop.com", "07/01/2025", "", ""],
            ["gus@shop.com", "31/02/2025", "", ""],
        ],
    )
    summary = import_file(sqlite_workspace, "leads", leads, mapping=mapping, now=NOW)
    assert (summary.created, summary.rejected, summary.rebuilt) == (2, 1, 2)
    assert [t for _, t, *_ in history_of(sqlite_workspace, "eve@shop.com")] == ["lead", "mql", "sql", "customer"]
    assert lead_row(sqlite_workspace, "fay@shop.com").stage == "mql"
    assert lead_row(sqlite_workspace, "eve@shop.com").created_at == datetime(2025, 1, 6, tzinfo=UTC)
    with pytest.raises(Exception, match="unknown stage"):
        parse_mapping("kind: leads\nlifecycle:\n  won: Won date\n", "bad.yaml")
    with pytest.raises(Exception, match="belong to a leads file"):
        parse_mapping("kind: events\nlifecycle:\n  mql: Date\n", "bad.yaml")


def test_a_live_decision_is_a_fact_that_a_rebuild_keeps(sqlite_workspace: Workspace, tmp_path: Path) -> None:
    events = write_csv(
        tmp_path / "e.csv",
        ["event_id", "email", "type", "occurred_at"],
        [["h1", "hal@corp.com", "demo_request", iso(NOW - 30 * DAY)]],
    )
    import_file(sqlite_workspace, "events", events, now=NOW - 30 * DAY)
    with sqlite_workspace.unit_of_work() as uow:
        apply_stage_action(uow, "hal@corp.com", "accept", by="rita", at=NOW - 20 * DAY, now=NOW - 20 * DAY)
    older = write_csv(
        tmp_path / "older.csv",
        ["event_id", "email", "type", "occurred_at"],
        [["h0", "hal@corp.com", "email_open", iso(NOW - 60 * DAY)]],
    )
    summary = import_file(reacting(sqlite_workspace, history_before=NOW), "events", older, now=NOW)
    assert summary.rebuilt == 1
    assert [(t, by) for _, t, _, _, by in history_of(sqlite_workspace, "hal@corp.com")][-1] == ("sql", "rita")
    assert lead_row(sqlite_workspace, "hal@corp.com").created_at == NOW - 60 * DAY


def test_merges_carry_deals_and_erasure_forgets_notes(sqlite_workspace: Workspace, tmp_path: Path) -> None:
    deals = write_csv(
        tmp_path / "d.csv",
        ["deal_id", "email", "opened_at", "closed_at", "outcome", "reason", "rep_note"],
        [["D-7", "ivy@old.com", iso(T0), iso(T0 + DAY), "lost", "went quiet", "call her again"]],
    )
    stages = write_csv(tmp_path / "s.csv", ["email", "stage", "at"], [["ivy@new.com", "mql", iso(T0)]])
    import_file(sqlite_workspace, "deals", deals, now=NOW)
    import_file(sqlite_workspace, "stages", stages, now=NOW)
    with sqlite_workspace.unit_of_work() as uow:
        merge_leads(uow, "ivy@new.com", "ivy@old.com", by="admin", now=NOW)
        kept = repo.find_lead(uow.connection, "ivy@new.com")
        assert kept is not None
        f, d = schema.stage_facts, schema.deals
        assert uow.connection.execute(select(d.c.lead_id, d.c.properties)).one() == (
            kept.id,
            {"rep_note": "call her again"},
        )
        assert sorted(uow.connection.execute(select(f.c.to_stage).where(f.c.lead_id == kept.id)).scalars()) == [
            "mql", "nurture", "opportunity",
        ]  # fmt: skip
        erase_lead(uow, "ivy@new.com", by="admin", now=NOW)
        assert uow.connection.execute(select(d.c.properties)).scalar_one() == {}
        assert set(uow.connection.execute(select(f.c.note)).scalars()) == {None}


def test_contradiction_names_the_pair() -> None:
    at = [T0 + k * DAY for k in range(4)]
    ok = [imported_fact(at=at[0], stage="sql"), imported_fact(at=at[1], action="lose", reason="price")]
    assert contradiction([*ok, imported_fact(at=at[2], stage="mql")]) is None  # back from nurture
    sold = imported_fact(at=at[1], action="win")
    pair = contradiction(
        [imported_fact(at=at[0], stage="sql"), sold, imported_fact(at=at[3], action="reject", reason="spam")]
    )
    assert pair is not None and pair[0] is sold


# --- order independence ---------------------------------------------------------------------------

TYPES = ("email_open", "email_click", "page_view", "content_download", "demo_request", "webinar_attended")
PATHS = (
    (("accept", None),),
    (("reject", "no_need"),),
    (("accept", None), ("open-opportunity", None), ("win", None)),
    (("accept", None), ("open-opportunity", None), ("lose", "price")),
    (("disqualify", "student"),),
)


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[list[Any]], list[list[Any]]]:
    """A few people's events (on even minutes) and people's decisions (on odd minutes)."""
    events: list[list[Any]] = []
    stages: list[list[Any]] = []
    for n in range(draw(st.integers(1, 3))):
        email = f"p{n}@firm{n}.com"
        minutes = draw(st.lists(st.integers(0, 60 * 24 * 45), min_size=1, max_size=8, unique=True))
        for k, minute in enumerate(sorted(minutes)):
            kind = draw(st.sampled_from(TYPES))
            events.append([f"{n}-{k}", email, kind, iso(T0 + timedelta(minutes=2 * minute))])
        path = draw(st.sampled_from(PATHS))
        steps = draw(st.lists(st.integers(1, 60 * 24 * 30), min_size=len(path), max_size=len(path), unique=True))
        at = T0 + timedelta(minutes=1)
        for (action, reason), step in zip(path, sorted(steps), strict=True):
            at = T0 + timedelta(minutes=2 * step + 1)
            stages.append([email, action, iso(at), "sam", reason or ""])
    return events, stages


def _import_in_pieces(workspace: Workspace, folder: Path, pieces: list[tuple[str, list[list[Any]]]], size: int) -> None:
    history = reacting(workspace, history_before=NOW)
    header = {
        "events": ["event_id", "email", "type", "occurred_at"],
        "stages": ["email", "action", "at", "by", "reason"],
    }
    for k, (kind, rows) in enumerate(pieces):
        path = write_csv(folder / f"{k}-{kind}.csv", header[kind], rows)
        import_file(history, kind, path, batch_size=size, now=NOW)  # type: ignore[arg-type]


def _state(workspace: Workspace) -> dict[str, Any]:
    leads, h = schema.leads, schema.stage_history
    out: dict[str, Any] = {}
    with workspace.unit_of_work() as uow:
        conn = uow.connection
        for row in conn.execute(select(leads).order_by(leads.c.email)):
            moves = conn.execute(
                select(h.c.from_stage, h.c.to_stage, h.c.at, h.c.actor)
                .where(h.c.lead_id == row.id)
                .order_by(h.c.at, h.c.id)
            ).all()
            out[row.email] = {
                "stage": row.stage,
                "entered": row.stage_entered_at,
                "engagement": round(repo.lead_from_row(row).state.engagement_at(NOW.timestamp()), 6),
                "last_event": row.last_event_at,
                "moves": [tuple(m) for m in moves],
            }
    return out


def _replayed(workspace: Workspace, events: list[list[Any]], stages: list[list[Any]]) -> dict[str, Any]:
    """The reference: each lead's whole history replayed in time order by the domain, outside the store."""
    with workspace.unit_of_work() as uow:
        model = uow.active_model()
    evaluator = OnlineEvaluator(model)
    out: dict[str, Any] = {}
    for email in sorted({e[1] for e in events} | {s[0] for s in stages}):
        its_events = sorted((datetime.fromisoformat(e[3]), e[2]) for e in events if e[1] == email)
        facts = sorted(
            (datetime.fromisoformat(s[2]), imported_fact(at=datetime.fromisoformat(s[2]), action=s[1], reason=s[4] or None))
            for s in stages
            if s[0] == email
        )  # fmt: skip
        start = min([t for t, _ in its_events[:1]] + [t for t, _ in facts[:1]])
        lead = Lead(email=email)
        fit = score_fit(model, profile_values(lead, None))
        state = LeadState(
            stage=Stage.LEAD, stage_entered=start.timestamp(), fit=fit.score, grade=fit.grade, persona=fit.persona
        )
        newest = max([t for t, _ in its_events[-1:]] + [t for t, _ in facts[-1:]])
        run = replay_lead(
            evaluator,
            state,
            events=[ReplayEvent(t.timestamp(), kind, {}) for t, kind in its_events],
            actions=[ReplayAction(t.timestamp(), None, f.to_stage) for t, f in facts],
            until=newest.timestamp(),
            disqualified_by=disqualifying_rule(model, profile_values(lead, None)),
            settle=False,
        )
        out[email] = [(None, "lead", start, "system")] + [
            (m.from_stage.value, m.to_stage.value, datetime.fromtimestamp(m.at, UTC), m.actor.value) for m in run.moves
        ]
    return out


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=histories(),
    order=st.randoms(use_true_random=False),
    cuts=st.integers(1, 3),
    size=st.sampled_from([1, 3, 1000]),
)
def test_any_order_of_files_and_batches_gives_one_time_ordered_replay(
    tmp_path_factory: pytest.TempPathFactory, data: Any, order: Any, cuts: int, size: int
) -> None:
    events, stages = data
    folder = tmp_path_factory.mktemp("orders")
    in_order = copy_of_fresh_workspace(folder, "ordered.db")
    _import_in_pieces(in_order, folder, [("events", events), ("stages", stages)], 1000)
    shuffled_events, shuffled_stages = list(events), list(stages)
    order.shuffle(shuffled_events)
    order.shuffle(shuffled_stages)
    pieces: list[tuple[str, list[list[Any]]]] = []
    for kind, rows in (("events", shuffled_events), ("stages", shuffled_stages)):
        step = max(1, -(-len(rows) // cuts))
        pieces += [(kind, rows[i : i + step]) for i in range(0, len(rows), step)]
    order.shuffle(pieces)
    any_order = copy_of_fresh_workspace(folder, "shuffled.db")
    _import_in_pieces(any_order, folder, pieces, size)

    expected = _state(in_order)
    assert _state(any_order) == expected
    reference = _replayed(in_order, events, stages)
    assert {email: lead["moves"] for email, lead in expected.items()} == reference
    in_order.engine.dispose()
    any_order.engine.dispose()


# --- the real data of the guide --------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parents[2] / "src" / "qualify" / "examples"


def test_every_example_mapping_validates() -> None:
    from qualify.domain.automation import load_automation
    from qualify.domain.model_loader import load_model
    from qualify.service.connectors.crm_mapping import load_sync_mapping
    from qualify.service.imports.mapping import load_mapping

    models = set(EXAMPLES.rglob("model.yaml"))  # example scoring models are named so
    assert models
    for path in models:  # the example scoring models (examples/xeducation/model.yaml) load as models
        load_model(path.read_text(encoding="utf-8"), str(path))
    automation = EXAMPLES / "automation.yaml"  # segments and workflows (docs/automation.md); the rest are mappings
    assert load_automation(automation.read_text(encoding="utf-8"), str(automation)).segments
    syncs = set(EXAMPLES.rglob("*-sync.yaml"))  # the CRM sync mappings (docs/integrations.md)
    assert {load_sync_mapping(path).crm for path in syncs} == {"hubspot", "salesforce"}
    mappings = sorted(set(EXAMPLES.rglob("*.yaml")) - models - {automation} - syncs)
    kinds = {path.name: load_mapping(path).kind for path in mappings}
    assert {"hubspot-contacts.yaml", "salesforce-lead-history.yaml", "deals.yaml", "mqls.yaml"} <= kinds.keys()
    assert set(kinds.values()) >= {"leads", "stages", "deals"}


@pytest.mark.slow
def test_the_olist_funnel_goes_in_with_the_guides_two_commands(
    sqlite_workspace: Workspace, shared_data: Path, tmp_path: Path
) -> None:
    from qualify.service.imports.mapping import load_mapping
    from qualify.service.reading.funnel import funnel

    olist = shared_data / "olist"
    mqls = import_file(
        sqlite_workspace,
        "leads",
        olist / "olist_marketing_qualified_leads_dataset.csv",
        mapping=load_mapping(EXAMPLES / "olist" / "mqls.yaml"),
        rejects_path=tmp_path / "mqls.rejects.csv",
    )
    deals = import_file(
        sqlite_workspace,
        "deals",
        olist / "olist_closed_deals_dataset.csv",
        mapping=load_mapping(EXAMPLES / "olist" / "deals.yaml"),
        rejects_path=tmp_path / "deals.rejects.csv",
    )
    assert (mqls.created, mqls.rejected, mqls.rebuilt) == (8000, 0, 8000)
    assert (deals.created, deals.rejected) == (841, 1)
    assert deals.rejects_path is not None
    assert "customer at 2018-03-06" in deals.rejects_path.read_text(encoding="utf-8")
    with sqlite_workspace.unit_of_work() as uow:
        report = funnel(uow)
        clocks = select(schema.leads.c.id).where(schema.leads.c.sla_due_at.is_not(None))
        assert uow.connection.execute(clocks).first() is None  # history starts no SLA clock
    assert (report.reached["mql"], report.reached["customer"]) == (8000, 841)
    # Trained from the imported history alone, as the guide says: the benchmark's time-ordered figure.
    from qualify.service.analytics.training import train_model

    trained = train_model(sqlite_workspace, target="customer", within_days=150, cutoff="mql", store=False)
    assert 0.66 <= trained.report["test"]["model"]["roc_auc"] <= 0.71


def test_an_interrupted_import_leaves_its_leads_queued_and_the_worker_rebuilds_them(
    sqlite_workspace: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qualify.service.imports import files
    from qualify.service.worker import Worker

    stages = write_csv(tmp_path / "s.csv", ["email", "action", "at"], [["kim@corp.com", "accept", iso(T0)]])
    events = write_csv(
        tmp_path / "e.csv",
        ["event_id", "email", "type", "occurred_at"],
        [["k1", "kim@corp.com", "demo_request", iso(T0 - DAY)]],
    )

    def crash(*args: Any, **kwargs: Any) -> int:
        raise KeyboardInterrupt

    import_file(sqlite_workspace, "stages", stages, now=NOW)
    monkeypatch.setattr(files, "rebuild_pending", crash)
    with pytest.raises(KeyboardInterrupt):
        import_file(reacting(sqlite_workspace, history_before=NOW), "events", events, now=NOW)
    monkeypatch.undo()
    with sqlite_workspace.unit_of_work() as uow:
        assert uow.connection.execute(select(schema.rebuild_queue.c.lead_id)).all() != []
    assert [t for _, t, *_ in history_of(sqlite_workspace, "kim@corp.com")] == ["lead", "sql"]  # not yet in order
    with Worker(sqlite_workspace) as worker:
        assert worker.run_once(NOW).rebuilt == 1
    assert [t for _, t, *_ in history_of(sqlite_workspace, "kim@corp.com")] == ["lead", "mql", "sql"]
    with sqlite_workspace.unit_of_work() as uow:
        assert uow.connection.execute(select(schema.rebuild_queue)).all() == []
    assert lead_row(sqlite_workspace, "kim@corp.com").owner is None  # history: nobody routed


def test_an_open_deal_keeps_its_expected_close_date_as_a_property(sqlite_workspace: Workspace, tmp_path: Path) -> None:
    deals = write_csv(
        tmp_path / "d.csv",
        ["deal_id", "email", "opened_at", "closed_at", "outcome"],
        [["D-5", "lu@corp.com", iso(T0), iso(NOW + 30 * DAY), "open"]],
    )
    assert import_file(sqlite_workspace, "deals", deals, now=NOW).created == 1
    with sqlite_workspace.unit_of_work() as uow:
        deal = uow.connection.execute(select(schema.deals)).one()
    assert (deal.outcome, deal.closed_at) == ("open", None)
    assert deal.properties == {"expected_close_at": (NOW + 30 * DAY).isoformat()}
    assert lead_row(sqlite_workspace, "lu@corp.com").stage == "opportunity"
