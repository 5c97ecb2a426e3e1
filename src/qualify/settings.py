"""Settings: one typed object read from `QUALIFY_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///qualify.db"


class Settings(BaseSettings):
    """Every setting Qualify reads; documented in docs/configuration.md."""

    model_config = SettingsConfigDict(env_prefix="QUALIFY_", extra="ignore")

    session_secret: str | None = Field(
        default=None,
        description="The key that signs dashboard sessions; unset: one made once and kept in the workspace.",
    )
    database_url: str = Field(
        default=DEFAULT_DATABASE_URL,
        description="Where the workspace lives: sqlite:///path.db or postgresql+psycopg://user@host/db.",
    )
    create_unknown_leads: bool = Field(
        default=True,
        description="An event for an email or external id that is not in the store creates the lead.",
    )
    batch_size: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        description="Rows per transaction when importing files.",
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
