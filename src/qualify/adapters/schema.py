"""The store's tables, shared by SQLite and PostgreSQL. Migrations live in qualify/migrations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import BigInteger, TypeEngine

# Ids are 32-bit integers in the store: larger ones in a path or query are answered 422, not sent on.
MAX_ID = 2**31 - 1

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC times in and out, on SQLite (which keeps no zone) as on PostgreSQL.

    On SQLite the value is stored as ISO 8601 text in UTC without the zone, written and read
    with the C `isoformat`/`fromisoformat`: text that sorts as time does, and several times
    faster than the generic DATETIME processing on the ingestion path.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(32))
        return dialect.type_descriptor(DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "sqlite":
            return sqlite_time(value)
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            return datetime.fromisoformat(value).replace(tzinfo=UTC)
        moment: datetime = value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def sqlite_time(value: datetime) -> str:
    """How SQLite columns hold a time: UTC, no zone, always with microseconds (so text order is time order)."""
    if value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store")
        value = value.astimezone(UTC)
    return value.isoformat(sep=" ", timespec="microseconds")[:26]  # drop the "+00:00"


class epoch_micros(FunctionElement[int]):
    """A time column as whole microseconds since 1970 (UTC), exactly, on SQLite as on PostgreSQL:
    differences of two are what Python's `timedelta` between the times holds, so reports computed
    in SQL give the figures a Python loop over the rows would."""

    type = BigInteger()
    name = "epoch_micros"
    inherit_cache = True


@compiles(epoch_micros, "sqlite")
def _epoch_micros_sqlite(element: epoch_micros, compiler: SQLCompiler, **kw: Any) -> str:
    # `sqlite_time` text: 'YYYY-MM-DD HH:MM:SS.ffffff', the microseconds from character 21. The whole
    # seconds are read from the first 19 characters only: strftime rounds a fraction to milliseconds
    # and would count .9995 s and more as the next second.
    text = compiler.process(element.clauses, **kw)
    return (
        f"(CAST(strftime('%s', substr({text}, 1, 19)) AS INTEGER) * 1000000 + CAST(substr({text}, 21, 6) AS INTEGER))"
    )


@compiles(epoch_micros, "postgresql")
def _epoch_micros_postgresql(element: epoch_micros, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(EXTRACT(EPOCH FROM {compiler.process(element.clauses, **kw)}) * 1000000 AS BIGINT)"


def JSONDoc() -> Any:
    return JSON().with_variant(JSONB(), "postgresql")


accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("domain", String(253), nullable=False, unique=True),
    Column("name", String(300)),
    Column("industry", String(120)),
    Column("employees", Integer),
    Column("revenue", Float),
    Column("country", String(64)),
    Column("attributes", JSONDoc(), nullable=False, default=dict),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # The account as a whole (docs/accounts.md), kept by the ingestion pipeline as its people
    # change: its stage, owner and SLA, and its scores as of `scored_at` with the roll-up of its
    # people they are counted from (`domain.accounts.Rollup`). Null scores: not scored yet.
    Column("stage", String(20), nullable=False, server_default="target", index=True),
    Column("stage_entered_at", UTCDateTime()),
    Column("requalify_at", UTCDateTime()),  # sent back: not MQA again before this
    Column("owner", String(200), index=True),
    Column("owner_assigned_at", UTCDateTime()),
    Column("sla_due_at", UTCDateTime()),
    Column("sla_breached_at", UTCDateTime()),
    Column("fit_score", Float),
    Column("fit_grade", String(1)),
    Column("engagement_score", Float),
    Column("covered_roles", Integer),
    Column("rollup", JSONDoc()),
    Column("scored_at", UTCDateTime()),
    Column("model_version", String(64)),
    # Its people changed since it was kept, by an ingestion that left it to the worker
    # (`service.lifecycle.accounts.keep_pending`): its roll-up is counted again from them.
    Column("pending_since", UTCDateTime(), index=True),
)


def _move_columns() -> list[Column[Any]]:
    """What a lead's and an account's stage history record of each move."""
    return [
        Column("from_stage", String(20)),
        Column("to_stage", String(20), nullable=False),
        Column("at", UTCDateTime(), nullable=False, index=True),
        Column("actor", String(20), nullable=False),
        Column("by", String(200), nullable=False),
        Column("reason", String(300)),
        Column("note", Text),
        Column("fit_score", Float),
    ]


# Every stage change of an account, as `stage_history` is for leads.
account_stage_history = Table(
    "account_stage_history",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), nullable=False, index=True),
    *_move_columns(),
    Column("engagement_score", Float),
    Column("covered_roles", Integer),
    Column("roles", JSONDoc()),  # the names of the roles covered then
    Column("model_version", String(64)),
)

leads = Table(
    "leads",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(254), unique=True),  # the person's current journey only (below)
    Column("external_id", String(200), unique=True),
    # The person's email on every lead of theirs: one person may have several leads over time (a
    # new inquiry after a closed or lost journey, each keyed by its CRM id). Only the newest one
    # holds `email`, so that events and look-ups by email find the person's current journey.
    Column("person_email", String(254), index=True),
    Column("first_name", String(200)),
    Column("last_name", String(200)),
    Column("title", String(300)),
    Column("seniority", String(60)),
    Column("department", String(120)),
    Column("country", String(64)),
    Column("source", String(200)),
    Column("channel", String(200)),
    Column("do_not_email", Boolean, nullable=False, default=False),
    Column("do_not_call", Boolean, nullable=False, default=False),
    Column("attributes", JSONDoc(), nullable=False, default=dict),
    Column("account_id", Integer, ForeignKey("accounts.id"), index=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # The lifecycle: current stage and since when.
    Column("stage", String(20), nullable=False, index=True),
    Column("stage_entered_at", UTCDateTime(), nullable=False),
    # Scores as of `scored_at`, and the O(1) state that updates them.
    Column("persona", String(200)),
    Column("buying_roles", JSONDoc()),  # the roles of its account's buying group the person fills
    Column("fit_score", Float, nullable=False, default=0.0),
    Column("fit_grade", String(1), nullable=False, default="D"),
    Column("engagement_score", Float, nullable=False, default=0.0),
    Column("engagement_state", JSONDoc(), nullable=False, default=dict),
    Column("scored_at", UTCDateTime()),
    Column("last_event_at", UTCDateTime()),
    Column("model_version", String(64)),
    # Handoff: who owns the lead in sales, and which routing rule chose them.
    Column("owner", String(200), index=True),
    Column("owner_rule", String(200)),
    Column("owner_assigned_at", UTCDateTime()),
    # The SLA clock of an MQL: accept or reject before `sla_due_at`; a breach is recorded once.
    Column("sla_due_at", UTCDateTime(), index=True),
    Column("sla_breached_at", UTCDateTime()),
    # GDPR erasure: personal data and events gone, the row kept for the funnel's counts.
    Column("erased_at", UTCDateTime()),
    # The active predictive model's probability of converting, as of the lead's newest activity.
    Column("probability", Float),
    Column("probability_at", UTCDateTime()),
    Column("predictive_version", String(64)),
)
Index("ix_leads_stage_engagement", leads.c.stage, leads.c.engagement_score)
# The funnel's filters and the lead list offer the values in the store (migration 0012); not on
# the scores the ingestion path rewrites for every lead it touches.
Index("ix_leads_source", leads.c.source)
Index("ix_leads_channel", leads.c.channel)

events = Table(
    "events",
    metadata,
    # `id` is the order events were applied in: caps count in that order.
    Column("id", Integer, primary_key=True),
    Column("event_id", String(200), nullable=False, unique=True),
    Column("lead_id", Integer, ForeignKey("leads.id"), nullable=False),
    Column("type", String(64), nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("properties", JSONDoc(), nullable=False, default=dict),
    Column("awards", JSONDoc(), nullable=False, default=list),
)
Index("ix_events_lead_id_occurred_at", events.c.lead_id, events.c.occurred_at)
Index("ix_events_type_occurred_at", events.c.type, events.c.occurred_at)

stage_history = Table(
    "stage_history",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("lead_id", Integer, ForeignKey("leads.id"), nullable=False, index=True),
    *_move_columns(),
    Column("fit_grade", String(1)),
    Column("engagement_score", Float),
    Column("persona", String(200)),
    Column("model_version", String(64)),
)

# People's decisions on a lead's stage: an accept or a win taken live, a CRM's "became SQL" date, a
# deal opened or won. With the lead's events they are what its stage history is rebuilt from when
# history arrives out of time order (`lifecycle.stage_facts`). `from_stage` is the stage the
# action was taken from when it is known (taken live); an imported fact names none.
stage_facts = Table(
    "stage_facts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("lead_id", Integer, ForeignKey("leads.id"), nullable=False, index=True),
    Column("at", UTCDateTime(), nullable=False),
    Column("from_stage", String(20)),
    Column("to_stage", String(20), nullable=False),
    Column("action", String(30)),
    Column("by", String(200), nullable=False),
    Column("reason", String(300)),
    Column("note", Text),
    Column("source", String(300), nullable=False),  # live, or the file / deal it was imported from
    Column("recorded_at", UTCDateTime(), nullable=False),
    UniqueConstraint("lead_id", "at", "to_stage"),
)

# Leads whose history arrived out of time order, waiting to be rebuilt in order (at the end of the
# import that queued them, or by the worker when that import was interrupted). Changes dated
# before `history_before` are history when they are rebuilt.
rebuild_queue = Table(
    "rebuild_queue",
    metadata,
    Column("lead_id", Integer, ForeignKey("leads.id"), primary_key=True),
    Column("queued_at", UTCDateTime(), nullable=False),
    Column("history_before", UTCDateTime(), nullable=False),
)

# Deals a CRM holds: opened, closed won or lost, with an amount. A deal's dates are stage facts of
# its lead (opportunity, then customer or nurture).
deals = Table(
    "deals",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("deal_id", String(200), nullable=False, unique=True),
    Column("lead_id", Integer, ForeignKey("leads.id"), nullable=False, index=True),
    Column("opened_at", UTCDateTime()),
    Column("closed_at", UTCDateTime()),
    Column("outcome", String(10), nullable=False),  # open | won | lost
    Column("amount", Float),
    Column("reason", String(300)),
    Column("properties", JSONDoc(), nullable=False, default=dict),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

scoring_models = Table(
    "scoring_models",
    metadata,
    Column("version", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("document", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("activated_at", UTCDateTime()),
    Column("active", Boolean, nullable=False, default=False),
)
# At most one active model, whatever two concurrent activations do.
Index(
    "uq_scoring_models_active",
    scoring_models.c.active,
    unique=True,
    sqlite_where=scoring_models.c.active,
    postgresql_where=scoring_models.c.active,
)

# Trained predictive models: the artefact (JSON: model, calibration, feature recipe, report) with
# what it learnt from and how it did; at most one active.
predictive_models = Table(
    "predictive_models",
    metadata,
    Column("version", String(64), primary_key=True),
    Column("kind", String(20), nullable=False),  # logistic | boosted
    Column("target", String(20), nullable=False),
    Column("within_days", Integer, nullable=False),
    Column("cutoff", String(40), nullable=False),
    Column("scoring_model", String(64)),  # the rule model whose scores were features
    Column("data_from", UTCDateTime()),  # earliest and latest cutoff of the rows it learnt from
    Column("data_to", UTCDateTime()),
    Column("metrics", JSONDoc(), nullable=False, default=dict),  # on the newest rows, beside the baselines
    Column("document", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("activated_at", UTCDateTime()),
    Column("active", Boolean, nullable=False, default=False),
)
Index(
    "uq_predictive_models_active",
    predictive_models.c.active,
    unique=True,
    sqlite_where=predictive_models.c.active,
    postgresql_where=predictive_models.c.active,
)

# Each lead's behaviour features under the active predictive model, kept between batches
# (`qualify.predictive.recipe.Behaviour`): what its events up to `through_event` (an events.id)
# made of them, so that a new event is folded in without reading the lead's history again.
# Derived data: a row of another model version, or none, is rebuilt from the events.
lead_behaviour = Table(
    "lead_behaviour",
    metadata,
    Column("lead_id", Integer, ForeignKey("leads.id"), primary_key=True),
    Column("version", String(64), nullable=False),  # the predictive model whose recipe it follows
    Column("through_event", Integer, nullable=False),
    Column("events", Integer, nullable=False),  # its behaviour events (no bonus) among them: the roll-ups' count
    Column("state", JSONDoc(), nullable=False),
)

# People who sign in to the dashboard, with a role (admin, marketing, sales).
users = Table(
    "users",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("role", String(20), nullable=False),
    Column("password_hash", String(300), nullable=False),  # scrypt, with its parameters and salt
    Column("created_at", UTCDateTime(), nullable=False),
    Column("disabled_at", UTCDateTime()),
    # Sessions carry the epoch they were made in; signing out moves it on, ending them all.
    Column("session_epoch", Integer, nullable=False, default=0, server_default="0"),
)

# A user's saved views of the lead list: a name and the list's query string (filters and sort).
saved_views = Table(
    "saved_views",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("user_id", Integer, ForeignKey("users.id"), nullable=False),
    Column("name", String(100), nullable=False),
    Column("query", Text, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    UniqueConstraint("user_id", "name"),
)

# Notes people write on a lead (the lead page), shown with its stage history.
lead_notes = Table(
    "lead_notes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("lead_id", Integer, ForeignKey("leads.id"), nullable=False, index=True),
    Column("at", UTCDateTime(), nullable=False),
    Column("by", String(200), nullable=False),
    Column("text", Text, nullable=False),
)

# Values a workspace keeps for itself, e.g. the key that signs dashboard sessions when the
# settings give none.
workspace_settings = Table(
    "workspace_settings",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("value", Text, nullable=False),
)


api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    # The public half of a key ("qk_<key_id>_<secret>"): finds the row without a scan.
    Column("key_id", String(32), nullable=False, unique=True),
    Column("secret_hash", String(64), nullable=False),  # sha256 of the secret, hex
    Column("name", String(200), nullable=False),
    Column("role", String(20), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime()),
    Column("last_used_at", UTCDateTime()),
    # The dashboard user a key acts for (every sales key has one): a stage action's `by` is this
    # user, a sales key acts only on the leads this user owns, and disabling the user stops the key.
    Column("user_name", String(200)),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("at", UTCDateTime(), nullable=False, index=True),
    Column("actor", String(200), nullable=False),  # a person (--by) or a key's name
    Column("key_id", String(32)),  # the API key used, if any
    Column("action", String(60), nullable=False),
    Column("target", String(300)),
    Column("details", JSONDoc(), nullable=False, default=dict),
)


webhook_subscriptions = Table(
    "webhook_subscriptions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("url", String(2000), nullable=False),
    Column("secret", String(200), nullable=False),  # signs deliveries (HMAC-SHA256): kept, not hashed
    Column("kinds", JSONDoc(), nullable=False, default=list),  # announcement kinds it wants
    Column("description", String(300)),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", UTCDateTime(), nullable=False),
)

# The outbox: one row per announcement and subscription, written in the transaction of the
# change it announces; the worker delivers it, retries it, or gives it up as dead.
webhook_deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("subscription_id", Integer, ForeignKey("webhook_subscriptions.id"), nullable=False, index=True),
    Column("kind", String(40), nullable=False),
    Column("payload", JSONDoc(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("status", String(12), nullable=False),  # pending | delivered | dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("last_error", Text),
    Column("last_status", Integer),
    Column("delivered_at", UTCDateTime()),
)
Index("ix_webhook_deliveries_status_next", webhook_deliveries.c.status, webhook_deliveries.c.next_attempt_at)

# CRM sync (qualify.service.connectors.crm): a connected CRM with its sync mapping and pull cursors;
# the CRM's records linked to leads, with the sales status last seen and the values last written;
# and the push outbox, one pending row per lead to write to the CRM, delivered like webhooks.
crm_connections = Table(
    "crm_connections",
    metadata,
    Column("crm", String(40), primary_key=True),
    Column("mapping", Text, nullable=False),  # the sync mapping's YAML, as given
    Column("mapping_name", String(300), nullable=False),
    Column("account", String(300)),  # whom the credentials belong to, as the CRM said at connect
    Column("push_to", String(10), nullable=False),  # none | linked (the CRM's own people) | all
    Column("push_accounts", String(80)),  # the CRM's object the accounts' values are written to, if any
    Column("cursors", JSONDoc(), nullable=False),  # object -> the newest modification pulled
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("pulled_at", UTCDateTime()),  # when the last complete pull ended
    Column("pulling_until", UTCDateTime()),  # the lease of the pull running, if one is
    Column("failed_at", UTCDateTime()),  # when the last sync failed (the worker waits an interval)
    Column("last_error", Text),
    Column("last_summary", JSONDoc()),
)
crm_records = Table(
    "crm_records",
    metadata,
    Column("crm", String(40), primary_key=True),
    Column("object", String(80), primary_key=True),
    Column("record_id", String(200), primary_key=True),
    Column("lead_id", Integer, ForeignKey("leads.id"), index=True),
    Column("account_id", Integer, ForeignKey("accounts.id"), index=True),  # a company's record
    Column("status", String(200)),  # the sales status last seen on the record
    Column("pushed", JSONDoc()),  # the values last written to the record
    Column("pushed_at", UTCDateTime()),
)
crm_pushes = Table(
    "crm_pushes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("crm", String(40), nullable=False),
    Column("lead_id", Integer, ForeignKey("leads.id"), index=True),  # a person's push, or
    Column("account_id", Integer, ForeignKey("accounts.id"), index=True),  # an account's
    Column("created_at", UTCDateTime(), nullable=False),
    Column("status", String(12), nullable=False),  # pending | sending | pushed | dead
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("last_error", Text),
    Column("pushed_at", UTCDateTime()),
)
Index("ix_crm_pushes_status_next", crm_pushes.c.status, crm_pushes.c.next_attempt_at)

# Handoff: every assignment of an owner, for capacity per rep per week and for the record.
assignments = Table(
    "assignments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("lead_id", Integer, ForeignKey("leads.id"), nullable=False, index=True),
    Column("owner", String(200), nullable=False),
    Column("team", String(200)),
    Column("rule", String(200), nullable=False),
    Column("at", UTCDateTime(), nullable=False),
)
Index("ix_assignments_owner_at", assignments.c.owner, assignments.c.at)

# Round robin: the next position in each team's rotation.
routing_state = Table(
    "routing_state",
    metadata,
    Column("team", String(200), primary_key=True),
    Column("position", Integer, nullable=False, default=0),
)

# After a merge, the merged lead's keys still find the surviving lead.
lead_aliases = Table(
    "lead_aliases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(254), unique=True),
    Column("external_id", String(200), unique=True),
    Column("lead_id", Integer, ForeignKey("leads.id"), nullable=False, index=True),
    Column("merged_at", UTCDateTime(), nullable=False),
)


# --- automation: segments, workflows, email, web tracking (migration 0007) ----------------------

# Named dynamic filters (one YAML/JSON definition each), and who is in them now.
segments = Table(
    "segments",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("description", String(500)),
    Column("document", Text, nullable=False),  # the definition as JSON
    Column("version", String(64), nullable=False),  # content hash of the definition
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("refreshed_at", UTCDateTime()),  # the last batch evaluation over every lead
)
segment_members = Table(
    "segment_members",
    metadata,
    Column("segment", String(100), primary_key=True),
    Column("lead_id", Integer, ForeignKey("leads.id"), primary_key=True),
    Column("entered_at", UTCDateTime(), nullable=False),
)
Index("ix_segment_members_lead_id", segment_members.c.lead_id)
# Every entry and exit, for counts over time and a lead's own record.
segment_history = Table(
    "segment_history",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("segment", String(100), nullable=False),
    Column("lead_id", Integer, ForeignKey("leads.id"), nullable=False, index=True),
    Column("change", String(8), nullable=False),  # entered | left
    Column("at", UTCDateTime(), nullable=False),
    Column("by", String(20), nullable=False),  # online | batch | people
)
Index("ix_segment_history_segment_at", segment_history.c.segment, segment_history.c.at)

lead_tags = Table(
    "lead_tags",
    metadata,
    Column("lead_id", Integer, ForeignKey("leads.id"), primary_key=True),
    Column("tag", String(100), primary_key=True),
    Column("added_at", UTCDateTime(), nullable=False),
    Column("by", String(200), nullable=False),
)
Index("ix_lead_tags_tag", lead_tags.c.tag)

email_templates = Table(
    "email_templates",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("subject", String(500), nullable=False),
    Column("text", Text, nullable=False),
    Column("html", Text),
    Column("updated_at", UTCDateTime(), nullable=False),
)

workflows = Table(
    "workflows",
    metadata,
    Column("name", String(100), primary_key=True),
    Column("description", String(500)),
    Column("document", Text, nullable=False),  # the definition as JSON
    Column("version", String(64), nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# A lead's run through a workflow: which step is next and when it is due. The worker claims due
# rows one at a time (FOR UPDATE SKIP LOCKED) and runs a step and its log in one transaction.
workflow_enrolments = Table(
    "workflow_enrolments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("workflow", String(100), nullable=False),
    Column("lead_id", Integer, ForeignKey("leads.id"), nullable=False, index=True),
    Column("status", String(12), nullable=False),  # active | completed | exited | failed | stopped
    Column("step", Integer, nullable=False, default=0),  # the next step to run
    Column("next_run_at", UTCDateTime()),  # due time of the next step (null: waiting for an event only)
    Column("waiting_for", String(64)),  # an event type that ends the current wait early
    Column("wait_started_at", UTCDateTime()),
    Column("trigger", String(300), nullable=False),
    Column("enrolled_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),
    Column("outcome", String(300)),
)
Index("ix_workflow_enrolments_status_next", workflow_enrolments.c.status, workflow_enrolments.c.next_run_at)
Index("ix_workflow_enrolments_workflow_lead", workflow_enrolments.c.workflow, workflow_enrolments.c.lead_id)
# A lead runs a workflow once at a time, whatever two concurrent triggers do.
Index(
    "uq_workflow_enrolments_active",
    workflow_enrolments.c.workflow,
    workflow_enrolments.c.lead_id,
    unique=True,
    sqlite_where=workflow_enrolments.c.status == "active",
    postgresql_where=workflow_enrolments.c.status == "active",
)

# One row per step an enrolment ran (or enrolled, exited, completed): unique per step, so a
# step can be recorded, and so run, only once.
workflow_log = Table(
    "workflow_log",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("enrolment_id", Integer, ForeignKey("workflow_enrolments.id"), nullable=False),
    Column("lead_id", Integer, ForeignKey("leads.id"), nullable=False, index=True),
    Column("workflow", String(100), nullable=False),
    Column("step", Integer, nullable=False),  # -1: enrolled; len(steps): completed or exited
    Column("action", String(40), nullable=False),
    Column("outcome", String(20), nullable=False),  # done | skipped | waiting | enrolled | exited | completed | failed
    Column("detail", Text),
    Column("at", UTCDateTime(), nullable=False),
)
Index("uq_workflow_log_enrolment_step", workflow_log.c.enrolment_id, workflow_log.c.step, unique=True)

# Email outbox: rendered when a workflow step sends it, delivered by the worker through SMTP.
emails = Table(
    "emails",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("token", String(40), nullable=False, unique=True),  # random, names the email in tracking links
    Column("lead_id", Integer, ForeignKey("leads.id"), nullable=False, index=True),
    Column("enrolment_id", Integer, ForeignKey("workflow_enrolments.id")),
    Column("step", Integer),
    Column("template", String(100), nullable=False),
    Column("to_address", String(254), nullable=False),
    Column("subject", String(500), nullable=False),
    Column("body_text", Text, nullable=False),
    Column("body_html", Text),
    Column("status", String(12), nullable=False),  # pending | sending | sent | skipped | failed | unknown
    Column("reason", String(300)),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("sent_at", UTCDateTime()),
    Column("last_error", Text),
    Column("message_id", String(300)),
)
Index("ix_emails_status_next", emails.c.status, emails.c.next_attempt_at)

# Web tracking: an anonymous visitor (a random id the snippet keeps) and what it did before it
# identified; on identification its events are ingested onto the lead.
visitors = Table(
    "visitors",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("lead_id", Integer, ForeignKey("leads.id"), index=True),
    Column("first_seen_at", UTCDateTime(), nullable=False),
    Column("last_seen_at", UTCDateTime(), nullable=False),
    Column("identified_at", UTCDateTime()),
)
visitor_events = Table(
    "visitor_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("visitor_id", String(64), ForeignKey("visitors.id"), nullable=False, index=True),
    Column("event_id", String(200), nullable=False, unique=True),
    Column("type", String(64), nullable=False),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("properties", JSONDoc(), nullable=False, default=dict),
    Column("stitched_at", UTCDateTime()),  # when it was ingested onto the visitor's lead
)
