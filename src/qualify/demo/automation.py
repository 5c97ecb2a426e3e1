"""The demo's segments, workflows, email template and webhook, so that every part of the product has
something to show (the dashboard's Automation page, `qualify segments`, `qualify workflows`,
`qualify webhooks`) and nothing leaves the machine:

- three dynamic segments and a static one, tested against every lead once the world is built;
- a workflow that follows up pricing readers (a tag and a note to the owner) and enrols them as
  the segment fills, and a nurture workflow that would email a template, paused;
- a webhook subscription to an example address, switched off (its deliveries would have nowhere
  to go).
"""

from __future__ import annotations

from datetime import datetime

from qualify.domain.automation import load_automation
from qualify.service.automation.definitions import put_segments, put_workflows, set_workflow_active
from qualify.service.automation.segments import refresh_segments
from qualify.service.integrations.webhooks import add_subscription, remove_subscription
from qualify.service.unit_of_work import Workspace

DEMO_AUTOMATION = """
segments:
  - name: pricing-readers
    description: looked at pricing in the last 30 days, not a customer yet
    when:
      - {event: page_view, where: {url: {equals: /pricing}}, within_days: 30}
      - {field: stage, not_in: [customer, evangelist, disqualified]}
  - name: best-fit-engaged
    description: grade A with engagement of 30 or more
    when:
      - {field: fit_grade, equals: A}
      - {field: engagement_score, range: [30, null]}
  - name: gone-quiet
    description: MQLs and SQLs with no activity for three weeks
    when:
      - {field: stage, in: [mql, sql]}
      - {field: days_since_last_event, range: [21, null]}
  - name: event-invitees
    description: people the events team invites by hand (a static list)
    static: true
templates:
  - name: comeback
    subject: "{{ first_name or 'Hello' }}, what changed since we spoke?"
    text: "Hi {{ first_name }}, here is what is new since we last spoke: https://example.com/new"
workflows:
  - name: pricing-follow-up
    description: a pricing reader of a good fit gets a tag and their owner a note
    trigger: {entered_segment: pricing-readers}
    when: [{field: fit_grade, in: [A, B, C]}]
    reenter_after_days: 30
    steps:
      - add_tag: pricing
      - notify_owner: "read the pricing page lately"
  - name: nurture-comeback
    description: leads sent back to nurture get an email after a week (paused in the demo)
    trigger: {entered_stage: nurture}
    exit: [{field: stage, in: [sql, opportunity, customer]}]
    steps:
      - add_tag: recycled
      - wait: {days: 7}
      - send_email: comeback
"""
DEMO_WEBHOOK = "https://crm.example.com/qualify/webhooks"


def add_demo_automation(workspace: Workspace, now: datetime) -> dict[str, int]:
    """Define the demo's automation, test every lead against its segments, and add the switched-off
    webhook. Returns the batch refresh's counts ({"leads", "entered", "left"})."""
    document = load_automation(DEMO_AUTOMATION, "demo automation")
    with workspace.unit_of_work() as uow:
        put_segments(uow, document.segments, by="demo", now=now)
        put_workflows(uow, document, by="demo", now=now)
        set_workflow_active(uow, "nurture-comeback", False, by="demo", now=now)  # no email leaves the demo
        subscription, _ = add_subscription(
            uow, DEMO_WEBHOOK, ["lead.mql"], description="the CRM's endpoint (an example)", by="demo", now=now
        )
        remove_subscription(uow, subscription.id, by="demo", now=now)
    return refresh_segments(workspace, now)
