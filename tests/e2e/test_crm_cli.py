"""`qualify crm` as a user runs it: the console script, the token in the environment, the vendor's
loopback contract server behind QUALIFY_HUBSPOT_URL / QUALIFY_SALESFORCE_URL."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.test_cli import qualify
from tests.fake_hubspot import FakeHubSpot
from tests.fake_salesforce import FakeSalesforce


def test_crm_connect_sync_and_status_with_hubspot(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    assert qualify("init", env={"QUALIFY_DATABASE_URL": url}).returncode == 0
    with FakeHubSpot(token="pat-na1-secret-token") as hub:
        hub.add("companies", {"domain": "acme.com", "name": "Acme"})
        ann = hub.add("contacts", {"email": "ann@acme.com", "firstname": "Ann", "jobtitle": "VP Marketing"})
        env = {"QUALIFY_DATABASE_URL": url, "QUALIFY_HUBSPOT_URL": hub.url}

        missing = qualify("crm", "connect", "hubspot", env=env)
        assert missing.returncode == 2 and "QUALIFY_HUBSPOT_TOKEN" in missing.stderr

        env["QUALIFY_HUBSPOT_TOKEN"] = "pat-na1-secret-token"
        connected = qualify("crm", "connect", "hubspot", env=env)
        assert connected.returncode == 0, connected.stderr
        assert "Created the fields" in connected.stdout and "secret-token" not in connected.stdout + connected.stderr

        dry = qualify("crm", "sync", "hubspot", "--dry-run", "--json", env=env)
        assert dry.returncode == 0, dry.stderr
        planned = json.loads(dry.stdout)
        assert planned["dry_run"] and planned["pulled"]["objects"]["contacts"]["created"] == 1
        assert (
            "qualify_stage" not in hub.objects["contacts"][ann]["properties"]
            or not hub.objects["contacts"][ann]["properties"]["qualify_stage"]
        )

        synced = qualify("crm", "sync", "hubspot", env=env)
        assert synced.returncode == 0, synced.stderr
        assert (
            "Pushed 1 leads and 1 accounts" in synced.stdout
            and hub.objects["contacts"][ann]["properties"]["qualify_stage"] == "lead"
        )

        status = json.loads(qualify("crm", "status", "--json", env=env).stdout)
        assert status[0]["crm"] == "hubspot" and status[0]["linked"] == 1 and status[0]["pushed"] == 2  # Ann, and Acme
        assert set(status[0]["cursors"]) == {"companies", "contacts"}  # no deal yet: nothing to resume from

        env["QUALIFY_HUBSPOT_TOKEN"] = "pat-na1-revoked"
        refused = qualify("crm", "sync", "hubspot", env=env)
        assert refused.returncode == 2 and "refused the token" in refused.stderr and "Traceback" not in refused.stderr
        assert "refused the token" in qualify("crm", "status", env=env).stdout
        assert hub.problems == []


def test_crm_connect_and_sync_with_salesforce(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    assert qualify("init", env={"QUALIFY_DATABASE_URL": url}).returncode == 0
    with FakeSalesforce() as sf:
        lead = sf.add("Lead", Email="ann@acme.com", LastName="Lee", Company="Acme", Status="Working - Contacted")
        env = {
            "QUALIFY_DATABASE_URL": url,
            "QUALIFY_SALESFORCE_URL": sf.url,
            "QUALIFY_SALESFORCE_TOKEN": "00Dfake!token",
            "REQUESTS_CA_BUNDLE": sf.ca_path,  # the loopback server's own certificate authority
        }
        missing = qualify("crm", "connect", "salesforce", env=env)
        assert missing.returncode == 2 and "Qualify_Stage__c" in missing.stderr
        for name in ("Stage", "Stage_Reason", "MQL_Reason", "Fit_Grade", "Owner"):
            sf.add_field("Lead", f"Qualify_{name}__c", "string")
        for name in ("Fit_Score", "Engagement", "Score", "Probability"):
            sf.add_field("Lead", f"Qualify_{name}__c", "double")
        for name in ("People", "MQLs", "Best_Score"):
            sf.add_field("Account", f"Qualify_{name}__c", "double")
        for name in ("Best_Fit_Grade", "Furthest_Stage"):
            sf.add_field("Account", f"Qualify_{name}__c", "string")
        assert qualify("crm", "connect", "salesforce", env=env).returncode == 0
        synced = qualify("crm", "sync", "salesforce", "--json", env=env)
        assert synced.returncode == 0, synced.stderr
        summary = json.loads(synced.stdout)
        assert summary["pulled"]["actions"] == 1 and summary["pushed"]["pushed"] == 1
        assert sf.records["Lead"][lead]["Qualify_Stage__c"] == "sql"
        assert sf.problems == []
