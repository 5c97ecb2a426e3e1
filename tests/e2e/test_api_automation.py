"""Segments and workflows over HTTP and on the command line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.e2e.test_api import api, event
from tests.e2e.test_serve import run

__all__ = ["api"]


def test_segments_and_workflows_over_http(api: Any) -> None:
    client, keys = api
    client.post("/v1/events", json=[event(1, "content_download", days=0)], headers=keys["ingest"])
    segment = {"description": "downloaded", "when": [{"event": "content_download"}]}
    assert client.put("/v1/segments/readers", json=segment, headers=keys["sales"]).status_code == 403
    made = client.put("/v1/segments/readers", json=segment, headers=keys["marketing"])
    assert made.status_code == 200, made.text
    assert made.json()["members"] == 1 and made.json()["refresh"]["entered"] == 1
    members = client.get("/v1/segments/readers/members", headers=keys["sales"]).json()
    assert [m["lead"] for m in members] == ["jane@acme.com"]
    counts = client.get("/v1/segments/readers/counts?days=14&every_days=7", headers=keys["sales"]).json()
    assert counts[-1]["members"] == 1 and len(counts) == 3
    bad = client.put("/v1/segments/broken", json={"when": [{"field": "shoe_size", "equals": 1}]}, headers=keys["admin"])
    assert bad.status_code == 422 and bad.json()["problems"][0]["field"] == "segments[0].when[0].field"
    assert client.put("/v1/segments/Bad Name", json=segment, headers=keys["admin"]).status_code == 422
    template = {"subject": "Hi {{ first_name }}", "text": "Hello"}
    assert client.put("/v1/templates/hello", json=template, headers=keys["marketing"]).status_code == 204
    flow = {"trigger": {"entered_segment": "readers"}, "steps": [{"add_tag": "reader"}, {"send_email": "hello"}]}
    answer = client.put("/v1/workflows/welcome", json=flow, headers=keys["marketing"])
    assert answer.status_code == 200, answer.text
    assert answer.json()["steps"] == ["add tag 'reader'", "send email 'hello'"]
    missing = client.put("/v1/workflows/x", json={**flow, "steps": [{"send_email": "nope"}]}, headers=keys["admin"])
    assert missing.status_code == 422 and "no email template 'nope'" in missing.json()["detail"]
    assert client.delete("/v1/segments/readers", headers=keys["admin"]).status_code == 422  # welcome uses it
    assert client.post("/v1/workflows/welcome/pause", headers=keys["admin"]).json() == {"stopped": 0}
    assert client.delete("/v1/segments/readers", headers=keys["admin"]).status_code == 204
    refused = client.post("/v1/workflows/welcome/resume", headers=keys["admin"])
    assert refused.status_code == 422 and "segment 'readers', which is gone" in refused.json()["detail"]
    log = client.get("/v1/leads/jane@acme.com/automation", headers=keys["sales"]).json()
    assert [(h["segment"], h["change"]) for h in log["segment_history"]] == [
        ("readers", "entered"),
        ("readers", "left"),
    ]
    assert client.get("/v1/leads/nobody@acme.com/automation", headers=keys["sales"]).status_code == 404


@pytest.mark.slow
def test_segments_and_workflows_on_the_command_line(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'w.db'}"
    run("init", "--db", db)
    document = tmp_path / "automation.yaml"
    document.write_text(
        """
segments:
  - name: hot
    when: [{field: engagement_score, range: {min: 1}}]
workflows:
  - name: greet
    trigger: {entered_segment: hot}
    steps: [{add_tag: greeted}]
""",
        encoding="utf-8",
    )
    assert "1 created" in run("workflows", "apply", str(document), "--db", db)
    assert "hot" in run("segments", "list", "--db", db)
    assert "add tag 'greeted'" in run("workflows", "list", "--db", db)
    assert "Tested 0 leads" in run("segments", "refresh", "--db", db)
    broken = tmp_path / "broken.yaml"
    broken.write_text("segments:\n  - name: x\n    when: [{field: nope, equals: 1}]\n", encoding="utf-8")
    import os
    import subprocess

    from tests.e2e.test_serve import SCRIPT

    done = subprocess.run(
        [SCRIPT, "segments", "apply", str(broken), "--db", db], capture_output=True, text=True, env=os.environ.copy()
    )
    assert done.returncode == 2 and "line 3" in done.stderr and "segments[0].when[0].field" in done.stderr
    assert TestClient  # the HTTP test above uses it through the fixture


def test_only_an_admin_key_may_send_a_score_bonus(api: Any) -> None:
    client, keys = api
    bonus = {**event(1, "score_bonus", days=0), "properties": {"points": 50}}
    answer = client.post("/v1/events", json=[bonus], headers=keys["marketing"]).json()
    assert answer["rejected"] == 1 and answer["results"][0]["field"] == "type"
    assert client.post("/v1/events", json=[bonus], headers=keys["admin"]).json()["accepted"] == 1
