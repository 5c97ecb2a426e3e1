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
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeEngine

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
)

leads = Table(
    "leads",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(254), unique=True),
    Column("external_id", String(200), unique=True),
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
    Column("from_stage", String(20)),
    Column("to_stage", String(20), nullable=False),
    Column("at", UTCDateTime(), nullable=False, index=True),
    Column("actor", String(20), nullable=False),
    Column("by", String(200), nullable=False),
    Column("reason", String(300)),
    Column("note", Text),
    Column("fit_score", Float),
    Column("fit_grade", String(1)),
    Column("engagement_score", Float),
    Column("persona", String(200)),
    Column("model_version", String(64)),
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
