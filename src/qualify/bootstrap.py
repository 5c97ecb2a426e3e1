"""The composition root: the one place that puts the after-change pipeline together.

Everything that runs Qualify — the command line, the HTTP API and dashboard, the worker, the
benchmarks and the tests — opens its workspace here, so every use case that changes leads runs
the same reactions in the same order (service/pipeline.py says what a reaction is):

1. `probability`: the active predictive model's probability of the touched leads, and the stage
   policy judged again with it where it has probability thresholds (predictions);
2. `handoff`: leads that became MQL routed to an owner, their SLA clock started (lifecycle);
3. `accounts`: the accounts of the touched leads: their roll-up, scores and stage kept up to
   date, an account that became MQA routed to its owner (lifecycle);
4. `announcements`: stage changes, new MQLs, new MQAs and score crossings into the webhook
   outbox (integrations);
5. `segments`: the touched leads tested against every segment, entries and exits recorded
   (automation);
6. `workflows`: leads whose change triggers a workflow enrolled (automation);
7. `crm`: a push to each connected CRM queued for the touched leads it holds (connectors, crm_outbox).

A caller that must not start side effects switches reactions off by name, for one workspace:
`open_workspace(settings, without=("handoff", "announcements", "workflows"))`, or
`pipeline.reacting(workspace, without=...)` on an open one. Nothing else changes: the same use cases write
the same rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from qualify.service.automation import enrolment, lead_data, segments
from qualify.service.connectors import crm_outbox
from qualify.service.email import reading as emails
from qualify.service.integrations import announcements
from qualify.service.lifecycle import accounts, handoff
from qualify.service.pipeline import Keeper, Pipeline, Reaction
from qualify.service.predictions import behaviour as predictive_behaviour
from qualify.service.predictions import serving as predictions
from qualify.service.unit_of_work import UnitOfWork, Workspace
from qualify.service.unit_of_work import open_workspace as open_store
from qualify.service.web_tracking import visitors
from qualify.settings import Settings

REACTIONS = ("probability", "handoff", "accounts", "announcements", "segments", "workflows", "crm")


def _account_merge(uow: UnitOfWork, gone: int, kept: int, now: datetime) -> None:
    accounts.forget_person(uow, gone, now)  # the kept lead is scored again after, with its account


def _email_merge(uow: UnitOfWork, gone: int, kept: int, now: datetime) -> None:
    emails.move_lead_emails(uow.connection, gone, kept)


def _email_forget(uow: UnitOfWork, lead_id: int, now: datetime) -> None:
    emails.forget_lead_emails(uow.connection, lead_id)


def _visitors_merge(uow: UnitOfWork, gone: int, kept: int, now: datetime) -> None:
    visitors.move_visitors(uow, gone, kept)


def _visitors_forget(uow: UnitOfWork, lead_id: int, now: datetime) -> None:
    visitors.forget_visitors(uow, lead_id)


def _automation_merge(uow: UnitOfWork, gone: int, kept: int, now: datetime) -> None:
    lead_data.move_lead(uow.connection, gone, kept, now)


def _automation_forget(uow: UnitOfWork, lead_id: int, now: datetime) -> None:
    lead_data.forget_lead(uow.connection, lead_id, now)


def _crm_merge(uow: UnitOfWork, gone: int, kept: int, now: datetime) -> None:
    crm_outbox.move_links(uow, gone, kept)


def _crm_forget(uow: UnitOfWork, lead_id: int, now: datetime) -> None:
    crm_outbox.forget_links(uow, lead_id)


def default_pipeline() -> Pipeline:
    """The product's pipeline: every reaction on, in the order the module docstring gives."""
    pipeline = Pipeline(
        reactions=(
            Reaction("probability", predictions.react),
            Reaction("handoff", handoff.react),
            Reaction("accounts", accounts.react),
            Reaction("announcements", announcements.react),
            Reaction("segments", segments.react_segments),
            Reaction("workflows", enrolment.react_workflows),
            Reaction("crm", crm_outbox.react),
        ),
        keepers=(
            Keeper("automation", _automation_merge, _automation_forget),
            Keeper("email", _email_merge, _email_forget),
            Keeper("web visitors", _visitors_merge, _visitors_forget),
            Keeper("crm links", _crm_merge, _crm_forget),
            Keeper("predictive behaviour", predictive_behaviour.merged, predictive_behaviour.forgotten),
            Keeper("account roll-ups", _account_merge, accounts.forget_person),
        ),
        refreshed=(("segments", segments.refresh_reading),),
    )
    assert tuple(pipeline.names) == REACTIONS
    return pipeline


def open_workspace(settings: Settings | None = None, *, create: bool = False, without: Iterable[str] = ()) -> Workspace:
    """Open (with `create`, make) the workspace at `settings.database_url` with the product's
    pipeline, less the reactions named in `without`; changes dated more than
    `QUALIFY_HISTORY_AGE_DAYS` before they arrive are history (service/pipeline.py)."""
    settings = settings or Settings()
    pipeline = default_pipeline().without(without)
    if settings.history_age_days is not None:
        pipeline = pipeline.with_history(age=timedelta(days=settings.history_age_days))
    return open_store(settings, create=create, pipeline=pipeline)
