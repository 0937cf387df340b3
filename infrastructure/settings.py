"""Service configuration, read once from ``CJLEDGER_*`` environment variables."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.values import BatchingMode


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CJLEDGER_", extra="ignore")

    database_url: str = Field(
        default="sqlite:///.cjledger/cjledger.db",
        description="sqlite:///path (embedded, default) or postgresql://user:pass@host:port/db",
    )
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    batching_mode: BatchingMode | None = Field(
        default=None, description="service default when a batch request names no mode"
    )
    max_pairs_cap: int = Field(default=120, ge=1)
    log_json: bool = False
    log_level: str = "INFO"
    queue_prefix: str = Field(default="cjledger", description="prefix of exchange/queue names")

    @field_validator("batching_mode", mode="before")
    @classmethod
    def _parse_mode(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return None
            return BatchingMode(value.strip())
        return value

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgres://", "memory://")):
            raise ValueError("database_url must start with sqlite://, postgresql:// or memory://")
        return value
