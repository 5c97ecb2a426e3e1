"""Settings: one typed object read from `QUALIFY_*` environment variables."""

from __future__ import annotations

import re
from email.utils import parseaddr
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///qualify.db"


# The URL schemes Qualify opens, and the one each stands for: hosting providers hand out
# postgres:// and postgresql://; Qualify talks to PostgreSQL through psycopg 3.
_SCHEMES = {
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite+pysqlite",
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}


def database_url(value: str) -> str:
    """A workspace's database URL in the form Qualify opens, or ValueError saying what is wrong:
    `postgres://` and `postgresql://` become `postgresql+psycopg://`."""
    text = value.strip()
    scheme, sep, rest = text.partition("://")
    if not sep or not scheme:
        raise ValueError(f"{value!r} is not a database URL; expected sqlite:///path.db or postgresql://user@host/db")
    wanted = _SCHEMES.get(scheme.lower())
    if wanted is None:
        backend = scheme.lower().split("+")[0]
        if backend in ("postgres", "postgresql"):
            raise ValueError(
                f"Qualify reaches PostgreSQL through psycopg 3: write postgresql://{rest}, not {scheme}://"
            )
        raise ValueError(
            f"Qualify keeps a workspace in SQLite or PostgreSQL, not {backend}: "
            "expected sqlite:///path.db or postgresql://user@host/db"
        )
    if wanted.startswith("sqlite") and not rest.startswith("/"):
        raise ValueError(f"{value!r}: a SQLite URL names its file after three slashes, as sqlite:///qualify.db")
    return f"{wanted}://{rest}"


_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]{0,63}")  # as the domain checks an event type


class Settings(BaseSettings):
    """Every setting Qualify reads; documented in docs/configuration.md."""

    model_config = SettingsConfigDict(env_prefix="QUALIFY_", extra="ignore")

    session_secret: SecretStr | None = Field(
        default=None,
        description=(
            "The key that signs dashboard sessions (32 characters or more, not a placeholder); "
            "unset: one made once and kept in the workspace."
        ),
    )
    backup_key: SecretStr | None = Field(
        default=None,
        description=(
            "The key that signs backups (32 characters or more, not a placeholder): `qualify backup` signs "
            "with it and `qualify restore` refuses a backup it did not sign; unset: backups are unsigned."
        ),
    )
    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="Where the workspace lives: sqlite:///path.db or postgresql+psycopg://user@host/db.",
    )
    create_unknown_leads: bool = Field(
        default=True,
        description="An event for an email or external id that is not in the store creates the lead.",
    )
    create_leads_from_external_ids: bool = Field(
        default=True,
        description=(
            "An event over the API that names a lead by an external id alone, unknown to the store, creates "
            "the lead (with QUALIFY_CREATE_UNKNOWN_LEADS); false: it is rejected, so that only your CRM's "
            "ids, imported first, are taken."
        ),
    )
    batch_size: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Rows per transaction when importing files.",
    )
    history_age_days: float | None = Field(
        default=None,
        gt=0,
        le=36_500,
        description=(
            "Changes dated more than this many days before they reach Qualify are history: they move "
            "leads as live ones do but start no SLA clock, announce nothing and enrol nobody; unset: off."
        ),
    )
    worker_interval: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="Seconds `qualify worker` waits between passes; `--interval` overrides it.",
    )
    webhook_max_attempts: int = Field(
        default=15,
        ge=1,
        le=100,
        description="Delivery attempts before a webhook delivery is given up as dead.",
    )
    webhook_backoff_base: float = Field(
        default=10.0,
        gt=0,
        le=86_400,
        description="Seconds: the ceiling of the wait after the first failed attempt; it doubles after each failure.",
    )
    webhook_backoff_cap: float = Field(
        default=3600.0,
        gt=0,
        le=7 * 86_400,
        description="Seconds: the largest ceiling of the wait between two attempts.",
    )
    webhook_timeout: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="Seconds a receiver has to answer one delivery (connect and response).",
    )
    webhook_concurrency: int = Field(
        default=4,
        ge=1,
        le=64,
        description="Deliveries one worker sends at the same time.",
    )
    webhook_allow: str = Field(
        default="",
        max_length=2000,
        description=(
            "Internal receivers webhooks may reach all the same, comma-separated: host names, addresses "
            "and networks (`127.0.0.1,10.0.0.0/8,hooks.internal`). Unset: public receivers only."
        ),
    )
    # --- security (docs/security.md) ---------------------------------------------------------------
    ingest_rate: float = Field(
        default=5000.0,
        ge=0,
        le=10_000_000,
        description=(
            "Events, leads and accounts per second one API key may send to POST /v1/events, PUT /v1/leads "
            "and PUT /v1/accounts (per server process); 0: no limit."
        ),
    )
    ingest_burst: int = Field(
        default=100_000,
        ge=1,
        le=100_000_000,
        description="Records one API key may send at once before the rate applies (the bucket's size).",
    )
    tracking_rate: float = Field(
        default=10.0,
        ge=0,
        le=1_000_000,
        description=(
            "Calls a second one client address may make to the web tracking routes POST /t/events and "
            "/t/identify (per server process); 0: no limit."
        ),
    )
    tracking_burst: int = Field(
        default=300,
        ge=1,
        le=10_000_000,
        description="Tracking calls one address may make at once before the rate applies.",
    )
    # --- email (docs/email.md) ---------------------------------------------------------------------
    smtp_host: str | None = Field(
        default=None,
        description="The SMTP server email is sent through; unset: sending is off and emails wait as pending.",
    )
    smtp_port: int | None = Field(
        default=None,
        ge=1,
        le=65_535,
        description="The SMTP server's port; unset: 25 (security none), 587 (starttls) or 465 (tls).",
    )
    smtp_security: Literal["none", "starttls", "tls"] = Field(
        default="starttls",
        description="How the SMTP connection is protected: none, starttls (upgrade after connecting) or tls.",
    )
    smtp_username: str | None = Field(default=None, description="The SMTP login; unset: no authentication.")
    smtp_password: SecretStr | None = Field(default=None, description="The SMTP password; never logged or shown.")
    smtp_timeout: float = Field(
        default=30.0,
        gt=0,
        le=600,
        description="Seconds the SMTP server has to answer each command.",
    )
    email_from: str | None = Field(
        default=None,
        description='The From of every email, e.g. "Acme Marketing <news@acme.com>"; sending needs it.',
    )
    email_max_attempts: int = Field(
        default=12,
        ge=1,
        le=100,
        description="Sending attempts before an email that keeps failing for a transient reason is failed.",
    )
    email_backoff_base: float = Field(
        default=60.0,
        gt=0,
        le=86_400,
        description="Seconds to wait after the first failed attempt; the wait doubles after each failure.",
    )
    email_backoff_cap: float = Field(
        default=21_600.0,
        gt=0,
        le=7 * 86_400,
        description="Seconds: the longest wait between two sending attempts.",
    )
    log_format: Literal["text", "json"] = Field(
        default="text",
        description=(
            "How `qualify serve` and `qualify worker` write their logs: text lines, or JSON lines (time, level, "
            "logger, message, the request's id) for a log collector."
        ),
    )
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="The address recipients reach `qualify serve` at: the base of tracking and unsubscribe links.",
    )

    segment_events: dict[str, str] = Field(
        default_factory=dict,
        description=(
            'Segment track names as Qualify event types, a JSON object: {"Trial Started": "trial_start"}. '
            "Added to the built-in ones (docs/integrations.md); any other name becomes its own type in "
            "lower_snake_case."
        ),
    )

    segment_traits: str | None = Field(
        default=None,
        description=(
            "A leads mapping file (the import mapping format) that an identify's traits go through "
            "instead of the built-in conventions: columns are trait names, nested ones with dots "
            "(company.name)."
        ),
    )

    hubspot_token: SecretStr | None = Field(
        default=None,
        description=(
            "A HubSpot private app's access token for `qualify crm` (scopes: crm.objects.contacts read and write, "
            "crm.objects.companies and deals read, crm.schemas.contacts read and write); never printed or stored."
        ),
    )
    hubspot_url: str | None = Field(
        default=None, description="HubSpot's API address; unset: https://api.hubapi.com. For a proxy or a test server."
    )
    salesforce_url: str | None = Field(
        default=None, description="Your Salesforce instance for `qualify crm`, e.g. https://acme.my.salesforce.com."
    )
    salesforce_token: SecretStr | None = Field(
        default=None,
        description="A Salesforce access token (OAuth, API scope) for `qualify crm`; never printed or stored.",
    )
    crm_sync_interval: float = Field(
        default=900.0,
        ge=0,
        description=(
            "Seconds between the worker's pulls from a connected CRM (pushes leave in every pass); 0 leaves "
            "pulling to `qualify crm sync`."
        ),
    )

    @field_validator("segment_events")
    @classmethod
    def _check_segment_events(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [f"{name!r}: {kind!r}" for name, kind in value.items() if not _EVENT_TYPE.fullmatch(str(kind))]
        if bad:
            raise ValueError(f"event types must be lower_snake_case (a-z, 0-9, _): {', '.join(bad)}")
        return {str(name).strip(): kind for name, kind in value.items()}

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        return database_url(value)

    @field_validator("email_from")
    @classmethod
    def _check_email_from(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        _, address = parseaddr(value.strip())
        if "@" not in address or any(c in value for c in "\r\n"):
            raise ValueError(f"{value!r} is not an address such as 'Acme <news@acme.com>'")
        return value.strip()

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str) -> str:
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError(f"{value!r} is not an http:// or https:// URL with a host (and no query)")
        return value.strip().rstrip("/")
