"""Settings: one typed object read from `QUALIFY_*` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///qualify.db"


class Settings(BaseSettings):
    """Every setting Qualify reads; documented in docs/configuration.md."""

    model_config = SettingsConfigDict(env_prefix="QUALIFY_", extra="ignore")

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
