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
    # SHELFPROOF_ENV: anything but "development" refuses the development CA and development keys.
    env: str = "development"


class GrpcServerSettings(BaseSettings):
    """Where a gRPC service listens; subclasses set the prefix and the default port."""

    model_config = SettingsConfigDict(extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    # Seconds in-flight RPCs get to finish on SIGTERM before they are cancelled.
    shutdown_grace_s: float = Field(default=5.0, ge=0)
    # Limits set on every server (gRPC's defaults are unbounded or implicit): HTTP/2 streams per
    # connection, RPCs in flight (more are answered RESOURCE_EXHAUSTED), and, with identities on, write
    # RPCs per caller organisation (a token bucket: this rate, this burst).
    max_concurrent_streams: int = Field(default=256, ge=1, le=65536)
    max_concurrent_rpcs: int = Field(default=2048, ge=1, le=1_000_000)
    write_rate_per_s: float = Field(default=200.0, gt=0)
    write_burst: int = Field(default=400, ge=1)


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


class TlsSettings(BaseSettings):
    """This process's identity (prefix ``SHELFPROOF_TLS_``): its certificate and key, the CA bundle its
    peers' certificates must chain to, and the CA's revocation list. Unset = plaintext (the library's
    default, for tests); `shelfproof up` sets them for every service unless SHELFPROOF_TLS=0."""

    model_config = SettingsConfigDict(env_prefix="SHELFPROOF_TLS_", extra="ignore")

    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    crl_file: Path | None = None

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None
