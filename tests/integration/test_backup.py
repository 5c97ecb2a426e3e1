"""Backup and restore: a workspace with every kind of row round-trips, on SQLite and PostgreSQL and
between them, and the restore checks itself against the backup's checksums."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from tests.conftest import fresh_postgres_schema
from tests.dashboard_world import world

from qualify.adapters import schema
from qualify.bootstrap import open_workspace
from qualify.domain.automation import load_automation
from qualify.domain.errors import InvalidInput
from qualify.domain.records import make_event
from qualify.service.admin.backup import backup, restore, verify
from qualify.service.automation import runs as workflows
from qualify.service.automation.definitions import put_segments, put_workflows
from qualify.service.automation.segments import refresh_segments
from qualify.service.lifecycle.events import ingest_events
from qualify.service.lifecycle.stages import apply_stage_action
from qualify.service.unit_of_work import Workspace
from qualify.settings import Settings

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def fill(workspace: Workspace) -> None:
    """Leads, events, history, users, assignments (the dashboard's world), plus automation rows."""
    world(workspace, leads=12)
    document = load_automation(
        """
templates: [{name: hi, subject: "Hi {{ first_name or 'there' }} 🚀", text: "Hello"}]
segments: [{name: askers, when: [{event: demo_request}]}]
workflows:
  - name: greet
    trigger: {entered_stage: nurture}
    steps: [{add_tag: again}, {send_email: hi}, {bonus: {points: 5}}, {wait: {days: 2}}]
"""
    )
    with workspace.unit_of_work() as uow:
        put_segments(uow, document.segments, by="test")
        put_workflows(uow, document, by="test")
    refresh_segments(workspace)
    with workspace.unit_of_work() as uow:
        ingest_events(uow, [make_event("x1", "demo_request", T0, email="zoe@acme.com")], now=T0)
        apply_stage_action(
            uow,
            "zoe@acme.com",
            "reject",
            by="rep",
            reason="no_budget",
            at=T0 + timedelta(hours=1),
            now=T0 + timedelta(hours=1),
        )
    workflows.run_due(workspace, T0 + timedelta(hours=2))


def counts(workspace: Workspace) -> dict[str, int]:
    with workspace.unit_of_work(read_only=True) as uow:
        return {
            t.name: int(uow.connection.execute(select(func.count()).select_from(t)).scalar() or 0)
            for t in schema.metadata.sorted_tables
        }


@pytest.mark.parametrize("target", ["sqlite", "postgres"])
def test_a_workspace_round_trips_and_the_restore_checks_itself(
    workspace: Workspace, target: str, tmp_path: Path
) -> None:
    fill(workspace)
    file = tmp_path / "w.qbk"
    manifest = backup(workspace, file)
    before = counts(workspace)
    assert manifest.counts == before and before["events"] > 10 and before["emails"] == 1 and before["workflow_log"] > 3
    if target == "sqlite":
        url = f"sqlite:///{tmp_path / 'restored.db'}"
        restore(url, file)
        restored = open_workspace(Settings(database_url=url))
        run_checks(restored, manifest, before)
    else:
        with fresh_postgres_schema() as url:
            restore(url, file)
            restored = open_workspace(Settings(database_url=url))
            run_checks(restored, manifest, before)


def run_checks(restored: Workspace, manifest: object, before: dict[str, int]) -> None:
    try:
        assert counts(restored) == before
        assert verify(restored, manifest) == []  # type: ignore[arg-type]
        # The restored workspace works: new rows get fresh ids (sequences moved past the restored ones).
        with restored.unit_of_work() as uow:
            ingest_events(
                uow,
                [
                    make_event(
                        "after", "page_view", T0 + timedelta(days=1), email="new@acme.com", properties={"url": "/"}
                    )
                ],
                now=T0 + timedelta(days=1),
            )
        assert counts(restored)["events"] == before["events"] + 1
    finally:
        restored.close()


def test_a_damaged_backup_or_a_full_target_is_refused_and_a_changed_row_is_found(
    sqlite_workspace: Workspace, tmp_path: Path
) -> None:
    fill(sqlite_workspace)
    file = tmp_path / "w.qbk"
    manifest = backup(sqlite_workspace, file)
    with pytest.raises(InvalidInput, match="already holds a workspace"):
        restore(sqlite_workspace.settings.database_url, file)
    with gzip.open(file, "rt", encoding="utf-8") as handle:
        lines = handle.read().splitlines()
    cut = tmp_path / "cut.qbk"
    with gzip.open(cut, "wt", encoding="utf-8") as out:
        out.write("\n".join(lines[: len(lines) // 2]) + "\n")
    with pytest.raises(InvalidInput, match="cut short"):
        restore(f"sqlite:///{tmp_path / 'a.db'}", cut)
    (tmp_path / "junk.qbk").write_bytes(b"not a backup")
    with pytest.raises(InvalidInput, match=r"damaged|not a gzip"):
        restore(f"sqlite:///{tmp_path / 'b.db'}", tmp_path / "junk.qbk")
    with sqlite_workspace.unit_of_work() as uow:
        uow.connection.execute(schema.leads.update().where(schema.leads.c.id == 1).values(title="Changed"))
    assert verify(sqlite_workspace, manifest) == ["leads: the rows' values differ from the backup's"]


def test_backup_and_restore_on_the_command_line(tmp_path: Path) -> None:
    from tests.e2e.test_serve import run

    source, target = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    run("init", "--db", source)
    assert "Backed up" in run("backup", str(tmp_path / "a.qbk"), "--db", source)
    assert "every table matches" in run("restore", str(tmp_path / "a.qbk"), "--db", target)
