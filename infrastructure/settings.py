"""Service configuration, read once from ``CJLEDGER_*`` environment variables."""

from __future__ import annotations

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.backoff import Backoff
from domain.values import BatchingMode
from infrastructure.limits import MAX_COUNT

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ModelPrice(BaseModel):
    """USD per million input and output tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input + output_tokens * self.output) / 1_000_000


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CJLEDGER_", extra="ignore", populate_by_name=True)

    database_url: str = Field(
        default="sqlite:///.cjledger/cjledger.db",
        description="sqlite:///path (embedded, default) or postgresql://user:pass@host:port/db",
    )
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    batching_mode: BatchingMode | None = Field(
        default=None, description="service default when a batch request names no mode"
    )
    max_pairs_cap: int = Field(default=120, ge=1, le=MAX_COUNT)
    log_json: bool = False
    log_level: str = "INFO"
    queue_prefix: str = Field(default="cjledger", description="prefix of exchange/queue names")

    # -- service mode: messaging (infrastructure.messaging) ---------------------------------
    broker_connect_timeout_seconds: float = Field(
        default=10.0, gt=0, description="how long one attempt to connect to RabbitMQ may take"
    )
    publish_timeout_seconds: float = Field(
        default=10.0, gt=0, description="how long a publish waits for the broker's confirm"
    )
    shutdown_timeout_seconds: float = Field(
        default=15.0, gt=0, description="on SIGTERM, how long in-flight messages may finish"
    )
    retry_backoff_base_seconds: float = Field(
        default=0.5, ge=0, description="first delay before a message is requeued after a failure"
    )
    retry_backoff_max_seconds: float = Field(default=30.0, ge=0)
    # CJ outcome consumer: throughput comes from recording many outcomes per transaction
    outcome_prefetch: int = Field(
        default=2000, ge=1, description="unacknowledged outcome messages a serve process holds"
    )
    outcome_batch_size: int = Field(
        default=1000, ge=1, description="most outcomes recorded in one transaction"
    )
    outcome_batch_wait_ms: float = Field(
        default=5.0, ge=0, description="how long a group of outcomes waits for more"
    )
    # outbox dispatcher and deadline sweeper
    dispatch_interval_seconds: float = Field(
        default=0.5, gt=0, description="how often the dispatcher looks for unsent waves"
    )
    serve_projections: bool = Field(
        default=True, description="serve also runs the read-model projection runner"
    )
    sweep_interval_seconds: float = Field(
        default=60.0, gt=0, description="how often overdue comparisons are closed"
    )
    # LPS worker and the embedded executor
    lps_provider: str = Field(
        default="simulated", description="LLM provider: simulated, openai or anthropic"
    )
    lps_model: str | None = Field(
        default=None, description="model asked for when a request names none of its own"
    )
    openai_base_url: str | None = Field(
        default=None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1"
    )
    openai_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("CJLEDGER_OPENAI_API_KEY", "OPENAI_API_KEY"),
    )
    openai_structured_output: bool = Field(
        default=True,
        description="ask for a JSON-schema response_format (turn off for servers without it)",
    )
    anthropic_base_url: str | None = None
    anthropic_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("CJLEDGER_ANTHROPIC_API_KEY", "ANTHROPIC_API_KEY"),
    )
    lps_temperature: float | None = Field(default=0.0, ge=0, le=2)
    lps_max_tokens: int = Field(default=600, ge=16)
    lps_request_timeout_seconds: float = Field(
        default=60.0, gt=0, description="timeout of one provider HTTP request"
    )
    lps_sdk_max_retries: int = Field(
        default=2, ge=0, description="retries the provider SDK makes itself (honours Retry-After)"
    )
    lps_prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="USD per million tokens by model (* = any): {m: {input: 1, output: 4}}",
    )
    lps_state_path: str = Field(
        default=".cjledger/lps-state.db",
        description="SQLite file where lps-worker keeps the provider batch jobs it scheduled",
    )
    lps_queue_mode: str | None = Field(
        default=None,
        description="per_request, serial_bundle or batch_api; unset = follow each request's hint",
    )
    lps_prefetch: int = Field(default=128, ge=1)
    lps_gather_ms: float = Field(
        default=20.0, ge=0, description="how long the worker waits to fill a bundle"
    )
    lps_bundle_cap: int = Field(default=64, ge=1, le=64)
    lps_concurrency: int = Field(
        default=4, ge=1, description="groups executed at once; provider calls in flight per group"
    )
    lps_max_attempts: int = Field(default=3, ge=1)
    lps_job_poll_seconds: float = Field(default=30.0, gt=0)
    lps_job_timeout_seconds: float = Field(
        default=25 * 3600.0,
        gt=0,
        description="how long a provider batch job may take: the 24 h window plus a margin",
    )
    lps_simulation_seed: int = Field(
        default=0, description="seed of the simulated judge (θ per essay id, verdicts)"
    )
    lps_simulated_failure_rate: float = Field(default=0.0, ge=0, le=1)
    lps_simulated_job_delay_seconds: float = Field(default=2.0, ge=0)

    # HTTP API (cjledger api) and process health
    api_token: SecretStr | None = Field(
        default=None, description="bearer token for write and admin endpoints"
    )
    api_read_token: SecretStr | None = Field(
        default=None, description="bearer token for reads; reads are open when unset"
    )
    api_max_body_bytes: int = Field(default=5_000_000, ge=1, description="larger bodies get 413")
    api_ready_max_lag: int = Field(
        default=1000, ge=0, description="/readyz fails when the read models lag more than this"
    )
    api_head_cache_seconds: float = Field(
        default=0.5,
        ge=0,
        description="API reads reuse the log's head for this long: the lag they report "
        "may miss events appended within it (0: ask the log on every read)",
    )
    api_follow: bool = Field(
        default=True, description="the API process keeps the read models caught up itself"
    )
    metrics_port: int | None = Field(
        default=None, ge=0, le=65535, description="serve/lps-worker: /metrics and /healthz port"
    )
    metrics_host: str = Field(default="127.0.0.1", description="address of the metrics port")

    def retry_backoff(self) -> Backoff:
        """The backoff before a message is requeued, for every long-running process."""
        return Backoff(
            base_seconds=self.retry_backoff_base_seconds,
            max_seconds=self.retry_backoff_max_seconds,
        )

    @field_validator("batching_mode", mode="before")
    @classmethod
    def _parse_mode(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return None
            return BatchingMode(value.strip())
        return value

    @field_validator("lps_queue_mode", mode="before")
    @classmethod
    def _parse_queue_mode(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return None
            allowed = ("per_request", "serial_bundle", "batch_api")
            if value not in allowed:
                raise ValueError(f"lps_queue_mode must be one of {', '.join(allowed)}")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _check_log_level(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().upper()
            if value not in LOG_LEVELS:
                raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        return value

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgres://", "memory://")):
            raise ValueError("database_url must start with sqlite://, postgresql:// or memory://")
        return value
