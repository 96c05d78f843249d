"""Settings read from environment variables, one prefix per service, built in each ``main()``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    """Settings every process shares (prefix ``SHELFPROOF_``)."""

    model_config = SettingsConfigDict(env_prefix="SHELFPROOF_", extra="ignore")

    # Runtime state (PostgreSQL cluster, ledger homes, content store, logs); relative to the working
    # directory, which is the repository root under `make`.
    state_dir: Path = Path(".local")
    log_level: str = "INFO"
    # "json", "text", or "auto" (JSON lines unless stderr is a terminal).
    log_format: str = "auto"


class GrpcServerSettings(BaseSettings):
    """Where a gRPC service listens; subclasses set the prefix and the default port."""

    model_config = SettingsConfigDict(extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    # Seconds in-flight RPCs get to finish on SIGTERM before they are cancelled.
    shutdown_grace_s: float = Field(default=5.0, ge=0)


class PostgresSettings(BaseSettings):
    """The project-local PostgreSQL cluster that `shelfproof up` manages (prefix ``SHELFPROOF_PG_``)."""

    model_config = SettingsConfigDict(env_prefix="SHELFPROOF_PG_", extra="ignore")

    port: int = Field(default=54329, ge=1, le=65535)
    database: str = "shelfproof"
    user: str = "shelfproof"
    # Set to use an external server instead of the local cluster, e.g.
    # postgresql://user:pass@db:5432/shelfproof
    dsn: str | None = None
    # Where the local cluster lives; empty = <state_dir>/postgres.
    cluster_dir: Path | None = None
